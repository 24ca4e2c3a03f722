"""FastAPI dependencies: the agent context, database sessions, who the caller is (the shared
token or a named token, ``agent.access``) and the role each route requires."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from agent.access import SHARED_TOKEN_NAME, Channel, Principal, Role, principal_of_token
from agent.context import AgentContext
from agent.http.auth import COOKIE_NAME, TokenChecker
from storage import api_tokens

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
    if origin == "null":
        # the pages send ``Referrer-Policy: no-referrer``, so a browser's own form posts carry
        # ``Origin: null``; its ``Sec-Fetch-Site`` (which scripts cannot set) says same-origin
        return request.headers.get("sec-fetch-site") == "same-origin"
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def identify(request: Request, checker: TokenChecker) -> Principal | None:
    """The caller: the shared token (``admin``) or a named, unrevoked token, presented as a
    Bearer credential or as the web session cookie; None when neither.

    Raises
    ------
    HTTPException
        403 when a cookie-authenticated write comes from another origin.
    """
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    principal = _identify(request, checker)
    if principal is not None:
        request.state.principal = principal
    return principal


def _identify(request: Request, checker: TokenChecker) -> Principal | None:
    authorization = request.headers.get("authorization")
    if checker.bearer_ok(authorization):
        return Principal(name=SHARED_TOKEN_NAME, role=Role.ADMIN, channel=Channel.API)
    scheme, _, credential = (authorization or "").strip().partition(" ")
    ctx = get_ctx(request)
    if scheme.lower() == "bearer" and credential.strip():
        with ctx.sessions() as session:
            named = principal_of_token(session, credential.strip(), Channel.API)
        if named is not None:
            return named
    cookie = request.cookies.get(COOKIE_NAME)
    principal: Principal | None = None
    if checker.cookie_ok(cookie):
        principal = Principal(name=SHARED_TOKEN_NAME, role=Role.ADMIN, channel=Channel.WEB)
    else:
        token_id = checker.named_cookie_id(cookie)
        if token_id is not None and cookie is not None:
            with ctx.sessions() as session:
                row = api_tokens.active_token_by_id(session, token_id)
            if row is not None and checker.named_cookie_ok(cookie, row.id, row.token_sha256):
                principal = Principal(
                    name=row.name, role=Role(row.role), channel=Channel.WEB, token_id=row.id
                )
    if principal is not None and request.method not in _SAFE_METHODS and not _same_origin(request):
        raise HTTPException(status_code=403, detail="cross-origin request refused")
    return principal


def authenticated(request: Request, checker: TokenChecker, authorization: str | None) -> bool:
    """True when the request carries a valid token (Bearer) or a valid session cookie."""
    return identify(request, checker) is not None


def require_token(
    request: Request,
    checker: Annotated[TokenChecker, Depends(get_checker)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """API routes: 401 unless the request is authenticated (any role: ``viewer`` and up)."""
    principal = identify(request, checker)
    if principal is None:
        raise HTTPException(
            status_code=401,
            detail="missing or wrong token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="liver-agent"'},
        )
    return principal


def require_login(
    request: Request, checker: Annotated[TokenChecker, Depends(get_checker)]
) -> Principal:
    """Web pages: redirect to the login form unless authenticated."""
    principal = identify(request, checker)
    if principal is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return principal


def require_role(role: Role) -> Callable[[Request, TokenChecker], Principal]:
    """A dependency: the caller, 403 unless its role includes ``role`` (401 / login redirect
    first when there is no caller: the router's own dependency runs before)."""

    def check(
        request: Request, checker: Annotated[TokenChecker, Depends(get_checker)]
    ) -> Principal:
        principal = identify(request, checker)
        if principal is None:
            raise HTTPException(
                status_code=401,
                detail="missing or wrong token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": 'Bearer realm="liver-agent"'},
            )
        if not principal.allows(role):
            raise HTTPException(
                status_code=403,
                detail=f"this needs the role '{role}' (the token '{principal.name}' is "
                f"'{principal.role}')",
            )
        return principal

    return check


CtxDep = Annotated[AgentContext, Depends(get_ctx)]
SessionDep = Annotated[Session, Depends(get_session)]
ViewerDep = Annotated[Principal, Depends(require_token)]
ReaderDep = Annotated[Principal, Depends(require_role(Role.READER))]
AdminDep = Annotated[Principal, Depends(require_role(Role.ADMIN))]
