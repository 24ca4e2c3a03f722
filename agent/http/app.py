"""The FastAPI application of the agent: built by :func:`create_app` from an agent context,
with no state at import time."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent import __version__
from agent.context import AgentContext
from agent.http import (
    api,
    feedback_api,
    health,
    models_api,
    monitoring_api,
    requests_api,
    stow,
    web,
)
from agent.http.auth import TokenChecker
from agent.http.deps import LoginRequired, require_token
from agent.tokens import resolve_token

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

# Everything the page loads comes from this server; nothing from the internet.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

DESCRIPTION = """Admin API of liver-agent (research use only).

Every route except `/healthz` needs a token: `Authorization: Bearer <token>`, the shared
token (role admin) or a named token (`liver-agent http token create NAME --role ROLE`). Roles:
viewer (read), reader (also feedback), admin (also mode switches, retry, cancel, STOW-RS).
STOW-RS ingress: `POST /dicomweb/studies` (PS3.18 10.5).
"""


def create_app(ctx: AgentContext, *, token: str | None = None) -> FastAPI:
    """Build the HTTP application for one agent context.

    Parameters
    ----------
    ctx
        Settings, database, spool, metrics, ingestor and models of the process.
    token
        The token requests must carry; default: :func:`agent.tokens.resolve_token`
        (``http.token``, else the token file next to the database, made if missing).
    """
    if token is None:
        resolved = resolve_token(ctx.settings)
        assert resolved is not None  # create=True always yields a token
        token = resolved.value
    app = FastAPI(
        title="liver-agent",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: not offline
        redoc_url=None,
        openapi_url=None,  # served below, behind the token
    )
    app.state.ctx = ctx
    app.state.checker = TokenChecker(token)
    app.state.templates = web.make_templates()

    app.include_router(health.public)
    app.include_router(health.protected)
    app.include_router(api.router)
    app.include_router(models_api.router)
    app.include_router(feedback_api.router)
    app.include_router(monitoring_api.router)
    app.include_router(requests_api.router)
    app.include_router(stow.router)
    app.include_router(web.router)
    app.include_router(web.pages)
    app.include_router(web.fragments)
    app.include_router(feedback_api.pages)
    app.include_router(monitoring_api.pages)
    app.include_router(models_api.pages)
    monitoring_api.install_gauges(ctx)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_token)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.exception_handler(api.ApiError)
    def _api_error(_request: Request, err: api.ApiError) -> JSONResponse:
        return JSONResponse({"detail": err.message, "code": err.code}, status_code=err.status_code)

    @app.exception_handler(LoginRequired)
    def _login(_request: Request, err: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(err.next_url, safe='')}", status_code=303)

    app.add_middleware(SecurityHeaders)
    return app


class SecurityHeaders:
    """Pure ASGI middleware: nosniff and no-referrer everywhere; CSP and no-store on HTML.

    (Pure ASGI rather than ``BaseHTTPMiddleware`` so STOW-RS request bodies stream through.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
