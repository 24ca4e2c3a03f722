"""How HTTP requests authenticate: ``Authorization: Bearer <token>`` or the web page's session
cookie, which holds an HMAC of the token (never the token itself), so changing the token ends
every web session. Which token is in force is ``agent.tokens``.
"""

from __future__ import annotations

import hashlib
import hmac

from agent.errors import HttpConfigError
from agent.settings import token_problem

COOKIE_NAME = "liver_agent_session"
COOKIE_MAX_AGE_S = 12 * 3600
_COOKIE_CONTEXT = b"liver-agent web session v1"


class TokenChecker:
    """Checks bearer tokens and session cookies against the token in force (constant time)."""

    def __init__(self, token: str) -> None:
        problem = token_problem(token)
        if problem is not None:
            raise HttpConfigError("http_token_too_short", problem)
        self._token = token.strip().encode("utf-8")
        self._session = hmac.new(self._token, _COOKIE_CONTEXT, hashlib.sha256).hexdigest()

    def bearer_ok(self, authorization: str | None) -> bool:
        """True when an ``Authorization`` header carries the token as a Bearer credential."""
        if not authorization:
            return False
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential:
            return False
        return hmac.compare_digest(credential.strip().encode("utf-8"), self._token)

    def token_ok(self, candidate: str) -> bool:
        """True when ``candidate`` (from the login form) is the token."""
        return hmac.compare_digest(candidate.strip().encode("utf-8"), self._token)

    def session_value(self) -> str:
        """The cookie value of a logged-in web session (an HMAC of the token)."""
        return self._session

    def cookie_ok(self, cookie: str | None) -> bool:
        return bool(cookie) and hmac.compare_digest(
            (cookie or "").encode("utf-8"), self._session.encode("ascii")
        )
