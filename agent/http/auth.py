"""How HTTP requests authenticate: ``Authorization: Bearer <token>`` or the web page's session
cookie, which holds an HMAC of the token (never the token itself), so changing the token ends
every web session. Which token is in force is ``agent.tokens``.

A named token's session cookie is ``n<id>.<HMAC keyed by the shared token of the named
token's hash>``: changing the shared token ends those sessions too, and revoking the named
token ends its own (the cookie names a token row that must still be active).
"""

from __future__ import annotations

import hashlib
import hmac

from agent.errors import HttpConfigError
from agent.settings import token_problem

COOKIE_NAME = "liver_agent_session"
COOKIE_MAX_AGE_S = 12 * 3600
_COOKIE_CONTEXT = b"liver-agent web session v1"
_NAMED_COOKIE_CONTEXT = b"liver-agent named web session v1:"


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

    def named_session_value(self, token_id: int, token_sha256: str) -> str:
        """The cookie value of a web session of the named token ``token_id``."""
        mac = hmac.new(
            self._token, _NAMED_COOKIE_CONTEXT + token_sha256.encode("ascii"), hashlib.sha256
        ).hexdigest()
        return f"n{token_id}.{mac}"

    @staticmethod
    def named_cookie_id(cookie: str | None) -> int | None:
        """The token id a named-session cookie claims (unverified), or None."""
        if not cookie or not cookie.startswith("n"):
            return None
        head, dot, _ = cookie.partition(".")
        if not dot or not head[1:].isdigit() or len(head) > 11:
            return None
        return int(head[1:])

    def named_cookie_ok(self, cookie: str, token_id: int, token_sha256: str) -> bool:
        expected = self.named_session_value(token_id, token_sha256)
        return hmac.compare_digest(cookie.encode("utf-8"), expected.encode("ascii"))
