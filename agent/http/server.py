"""Runs the FastAPI app on uvicorn in a thread of the agent process."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from agent.errors import HttpConfigError
from agent.http.app import create_app
from agent.tls import server_context
from agent.tokens import check_exposure, resolve_token

if TYPE_CHECKING:
    from agent.context import AgentContext

logger = logging.getLogger(__name__)

__all__ = ["HttpServer", "create_app"]


def bind_socket(host: str, port: int) -> socket.socket:
    """Listen on ``host:port`` (port 0: any free port).

    Raises
    ------
    HttpConfigError
        ``http_bind_failed`` with the reason (address in use, not an address of this host).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        infos.sort(key=lambda info: info[0] != socket.AF_INET)  # "localhost": 127.0.0.1 first
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise HttpConfigError("http_bind_failed", f"cannot listen on {host}:{port}: {err}") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise HttpConfigError(
            "http_bind_failed", f"cannot listen on {host}:{port}: {err.strerror or err}"
        ) from err
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """uvicorn on a daemon thread over a socket bound at construction; ``stop`` ends it.

    Raises
    ------
    HttpConfigError
        At construction: a non-loopback host without a token, an unreadable token file, or a
        port that cannot be bound.
    """

    def __init__(self, ctx: AgentContext) -> None:
        http = ctx.settings.http
        check_exposure(http)
        resolved = resolve_token(ctx.settings)
        assert resolved is not None
        self.token_source = resolved.source
        self.token_path = resolved.path
        app = create_app(ctx, token=resolved.value)
        self.socket = bind_socket(http.host, http.port)
        ssl_context = None
        if http.tls.enabled:
            try:
                ssl_context = server_context(http.tls)
            except ValueError as err:
                raise HttpConfigError("http_tls_invalid", str(err)) from err
        self.scheme = "https" if ssl_context else "http"
        config = uvicorn.Config(
            app,
            # HTTPS with our context (TLS 1.2+), not uvicorn's own (no minimum version)
            ssl_context_factory=(lambda _config, _default: ssl_context) if ssl_context else None,
            log_level="warning",
            access_log=False,  # URLs carry accession numbers and UIDs; tokens never
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; return once uvicorn accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise HttpConfigError("http_start_failed", "the HTTP server stopped at start")
            if time.monotonic() > deadline:
                raise HttpConfigError("http_start_failed", "the HTTP server did not start")
            time.sleep(0.02)
        where = f" (token in {self.token_path})" if self.token_path else ""
        logger.info(
            "HTTP API on %s://%s:%s%s", self.scheme, self.socket.getsockname()[0], self.port, where
        )

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()
