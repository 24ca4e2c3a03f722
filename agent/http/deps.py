"""FastAPI dependencies: the agent context, database sessions and the token check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from agent.context import AgentContext
from agent.http.auth import COOKIE_NAME, TokenChecker

_bearer = HTTPBearer(auto_error=False, description="the agent's HTTP token")

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_ctx(request: Request) -> AgentContext:
    """The agent context the app was made with."""
    ctx: AgentContext = request.app.state.ctx
    return ctx


def get_checker(request: Request) -> TokenChecker:
    checker: TokenChecker = request.app.state.checker
    return checker


def get_session(ctx: Annotated[AgentContext, Depends(get_ctx)]) -> Iterator[Session]:
    """A read session for one request (writes open their own transaction)."""
    with ctx.sessions() as session:
        yield session


class LoginRequired(Exception):  # noqa: N818 - control flow for the web pages, not an error
    """Raised by web dependencies; the app answers with a redirect to the login form."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def _same_origin(request: Request) -> bool:
    """For cookie-authenticated writes: the browser's Origin (if sent) is this server."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def authenticated(request: Request, checker: TokenChecker, authorization: str | None) -> bool:
    """True when the request carries the token (Bearer) or a valid session cookie.

    Raises
    ------
    HTTPException
        403 when a cookie-authenticated write comes from another origin.
    """
    if checker.bearer_ok(authorization):
        return True
    if checker.cookie_ok(request.cookies.get(COOKIE_NAME)):
        if request.method not in _SAFE_METHODS and not _same_origin(request):
            raise HTTPException(status_code=403, detail="cross-origin request refused")
        return True
    return False


def require_token(
    request: Request,
    checker: Annotated[TokenChecker, Depends(get_checker)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """API routes: 401 unless the request is authenticated."""
    if not authenticated(request, checker, request.headers.get("authorization")):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="liver-agent"'},
        )


def require_login(request: Request, checker: Annotated[TokenChecker, Depends(get_checker)]) -> None:
    """Web pages: redirect to the login form unless authenticated."""
    if not authenticated(request, checker, request.headers.get("authorization")):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)


CtxDep = Annotated[AgentContext, Depends(get_ctx)]
SessionDep = Annotated[Session, Depends(get_session)]
