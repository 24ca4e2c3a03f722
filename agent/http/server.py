"""Runs the FastAPI app on uvicorn in a thread of the agent process."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

if TYPE_CHECKING:
    from agent.service import AgentContext

logger = logging.getLogger(__name__)


def create_app(ctx: AgentContext) -> FastAPI:
    app = FastAPI(title="liver-agent")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


class HttpServer:
    """uvicorn on a daemon thread; ``stop`` asks it to exit."""

    def __init__(self, ctx: AgentContext) -> None:
        http = ctx.settings.http
        config = uvicorn.Config(
            create_app(ctx),
            host=http.host,
            port=http.port,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
