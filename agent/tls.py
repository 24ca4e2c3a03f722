"""Secure transport: DICOM TLS (PS3.15 Annex B, BCP 195 profile: TLS 1.2 or newer) for the SCP
and DIMSE destinations, and HTTPS for the HTTP API.

Owns the ``tls`` settings groups, their checks (files readable, key matching its certificate:
the same checks for ``config check`` and ``serve``), the :class:`ssl.SSLContext` each side uses,
and :class:`TlsAssociationServer`, which does the server handshake in the connection's own
thread with a deadline (pynetdicom does it in the accept thread with none, so one client that
stalls mid-handshake would block every new connection).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pynetdicom.transport import ThreadedAssociationServer

logger = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class _TlsGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerTls(_TlsGroup):
    """TLS for a server the agent runs (the HTTP API; the DICOM SCP adds a deadline)."""

    enabled: bool = False
    certificate: Path | None = Field(
        default=None, description="PEM certificate (chain) the agent presents"
    )
    private_key: Path | None = Field(default=None, description="PEM private key of certificate")
    private_key_password: SecretStr | None = Field(
        default=None, description="only for an encrypted private key"
    )
    ca_bundle: Path | None = Field(
        default=None,
        description="PEM CA certificates that client certificates must chain to; with it, a "
        "client certificate that is presented is checked",
    )
    require_client_certificate: bool = Field(
        default=False, description="refuse clients without a certificate signed by ca_bundle"
    )

    @model_validator(mode="after")
    def _usable(self) -> ServerTls:
        if not self.enabled:
            return self
        if self.certificate is None or self.private_key is None:
            raise ValueError("tls is enabled: certificate and private_key are both needed")
        if self.require_client_certificate and self.ca_bundle is None:
            raise ValueError("require_client_certificate needs a ca_bundle to check them with")
        server_context(self)  # every file readable, the key matches the certificate
        return self


class DicomTls(ServerTls):
    """TLS for the DICOM SCP (PS3.15 Annex B)."""

    handshake_timeout: float = Field(
        default=10.0, gt=0, description="a client must finish the TLS handshake within this"
    )


class DestinationTls(_TlsGroup):
    """TLS for delivering to a DICOM node (the agent is the TLS client)."""

    enabled: bool = False
    ca_bundle: Path | None = Field(
        default=None,
        description="PEM CA certificates the destination's certificate must chain to; "
        "the system's CAs if unset",
    )
    certificate: Path | None = Field(
        default=None, description="client certificate, for destinations that require one"
    )
    private_key: Path | None = Field(default=None, description="private key of certificate")
    private_key_password: SecretStr | None = None
    check_hostname: bool = Field(
        default=True, description="the destination's certificate must name its host"
    )

    @model_validator(mode="after")
    def _usable(self) -> DestinationTls:
        if not self.enabled:
            return self
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("tls: certificate and private_key go together")
        client_context(self)
        return self


def _readable(path: Path, what: str) -> str:
    if not path.is_file():
        raise ValueError(f"tls {what} {path} does not exist or is not a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"tls {what} {path} is not readable by this user")
    return str(path)


def _load_chain(
    context: ssl.SSLContext, certificate: Path, key: Path, password: SecretStr | None
) -> None:
    cert = _readable(certificate, "certificate")
    keyfile = _readable(key, "private_key")
    if key.stat().st_mode & 0o077:
        logger.warning("tls private_key %s may be read by group or others: chmod 600 it", key)
    try:
        context.load_cert_chain(
            cert, keyfile, password.get_secret_value() if password is not None else None
        )
    except ssl.SSLError as err:
        if "KEY_VALUES_MISMATCH" in str(err):
            raise ValueError(
                f"tls private_key {key} does not match certificate {certificate}"
            ) from err
        raise ValueError(
            f"tls certificate {certificate} or private_key {key} cannot be used: {err.reason}"
        ) from err


def _load_cas(context: ssl.SSLContext, bundle: Path) -> None:
    cafile = _readable(bundle, "ca_bundle")
    try:
        context.load_verify_locations(cafile=cafile)
    except ssl.SSLError as err:
        raise ValueError(f"tls ca_bundle {bundle} holds no usable certificate: {err}") from err


def server_context(tls: ServerTls) -> ssl.SSLContext:
    """The server-side context: TLS 1.2+, our certificate, client certificates as configured.

    Raises
    ------
    ValueError
        A file is missing or unreadable, the key does not match the certificate, or the CA
        bundle holds no certificate.
    """
    if tls.certificate is None or tls.private_key is None:
        raise ValueError("tls: certificate and private_key are both needed")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    _load_chain(context, tls.certificate, tls.private_key, tls.private_key_password)
    if tls.ca_bundle is not None:
        _load_cas(context, tls.ca_bundle)
    if tls.require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
    elif tls.ca_bundle is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(tls: DestinationTls) -> ssl.SSLContext:
    """The client-side context for a DIMSE destination: TLS 1.2+, the server's certificate
    verified against ``ca_bundle`` (or the system's CAs), our certificate if configured.

    Raises
    ------
    ValueError
        As :func:`server_context`.
    """
    if tls.ca_bundle is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _load_cas(context, tls.ca_bundle)
    context.minimum_version = MINIMUM_VERSION
    context.check_hostname = tls.check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if tls.certificate is not None and tls.private_key is not None:
        _load_chain(context, tls.certificate, tls.private_key, tls.private_key_password)
    return context


class TlsAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the TLS handshake moved off the accept thread.

    ``get_request`` only wraps the accepted socket; the handshake runs in the connection's
    thread and must finish within ``handshake_timeout`` seconds in all (a deadline timer
    shuts the socket down, however slowly the peer keeps sending). A failed handshake (plain
    TCP, an untrusted or missing client certificate, TLS older than 1.2) closes only that
    connection. Set ``handshake_timeout`` and ``on_handshake_failed`` after construction.
    """

    handshake_timeout: float = 10.0
    on_handshake_failed: Callable[[str, str], None] | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket) and not self._handshake(request, client_address):
            self.shutdown_request(request)
            return
        super().process_request_thread(request, client_address)

    def _handshake(self, sock: ssl.SSLSocket, client_address: Any) -> bool:
        peer = f"{client_address[0]}:{client_address[1]}"

        expired = threading.Event()
        finished = threading.Event()
        lock = threading.Lock()

        def expire() -> None:
            with lock:
                if finished.is_set():
                    return
                expired.set()
            # the plain socket's shutdown: wakes the blocked handshake read from this thread
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

        timer = threading.Timer(self.handshake_timeout, expire)
        timer.daemon = True
        timer.name = "tls-handshake-deadline"
        timer.start()
        try:
            sock.settimeout(self.handshake_timeout + 1.0)  # the timer above comes first
            sock.do_handshake()
            sock.settimeout(None)
        except (OSError, ValueError) as err:
            reason = "timeout" if expired.is_set() else _failure_reason(err)
            logger.warning("TLS handshake with %s failed: %s", peer, reason)
            if self.on_handshake_failed is not None:
                self.on_handshake_failed(peer, reason)
            return False
        finally:
            timer.cancel()
        with lock:
            finished.set()
        return not expired.is_set()


def _failure_reason(err: BaseException) -> str:
    if isinstance(err, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(err, ssl.SSLError):
        return str(err.reason or err).lower()
    return type(err).__name__


def handshake_metric_reason(reason: str) -> str:
    """A short label for the rejected-associations metric."""
    if reason == "timeout":
        return "tls_handshake_timeout"
    return "tls_handshake_failed"


def start_tls_server(
    ae: Any,
    address: tuple[str, int],
    tls: DicomTls,
    evt_handlers: list[Any],
    on_handshake_failed: Callable[[str, str], None] | None = None,
) -> TlsAssociationServer:
    """Start ``ae`` as a TLS association acceptor on a daemon thread (what pynetdicom's
    ``AE.start_server(block=False, ssl_context=...)`` does, with :class:`TlsAssociationServer`).

    Raises
    ------
    ValueError
        The TLS files cannot be used (see :func:`server_context`).
    """
    server: TlsAssociationServer = ae.make_server(
        address,
        ssl_context=server_context(tls),
        evt_handlers=evt_handlers,
        server_class=TlsAssociationServer,
    )
    server.handshake_timeout = tls.handshake_timeout
    server.on_handshake_failed = on_handshake_failed
    thread = threading.Thread(target=server.serve_forever, name="AcceptorServer-tls", daemon=True)
    thread.start()
    ae._servers.append(server)  # AssociationServer.shutdown removes it from there
    return server


def own_certificate_context(tls: ServerTls) -> ssl.SSLContext:
    """A client context that trusts exactly the agent's own certificate (for the CLI asking
    the running agent on this host: the certificate is pinned, so the name it was issued for
    need not be the address asked).

    Raises
    ------
    ValueError
        No certificate configured, or it cannot be read.
    """
    if tls.certificate is None:
        raise ValueError("tls: no certificate configured")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_VERSION
    context.check_hostname = False  # pinned instead: only this certificate is trusted
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    _load_cas(context, tls.certificate)
    return context
