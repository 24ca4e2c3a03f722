"""Bearer-token authentication of the HTTP edge: where the token comes from, how it is checked.

The token is ``http.token`` from the settings, or, when none is set and the server listens on
loopback only, a random token generated at first start into ``http-token`` (mode 0600) next to
the SQLite database (``var/http-token`` by default). Requests authenticate with
``Authorization: Bearer <token>`` or with the web page's session cookie, which holds an HMAC of
the token (never the token itself), so changing the token ends every web session.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from agent.errors import AgentError
from agent.settings import HttpSettings, Settings

logger = logging.getLogger(__name__)

TOKEN_FILE_NAME = "http-token"  # noqa: S105 - a file name, not a secret
COOKIE_NAME = "liver_agent_session"
COOKIE_MAX_AGE_S = 12 * 3600
_COOKIE_CONTEXT = b"liver-agent web session v1"


class HttpConfigError(AgentError):
    """The HTTP server cannot start as configured (exposure without a token, port in use)."""


class TokenSource(enum.StrEnum):
    """Where the token in force came from."""

    SETTINGS = "settings"
    FILE = "file"
    GENERATED = "generated"


@dataclass(frozen=True)
class ResolvedToken:
    """The token in force and where it is kept (``path`` is None for a settings token)."""

    value: str
    source: TokenSource
    path: Path | None


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(http: HttpSettings) -> None:
    """Refuse to serve a non-loopback address without a configured token.

    Raises
    ------
    HttpConfigError
        ``http_token_required`` when ``http.host`` is not a loopback address and ``http.token``
        is unset.
    """
    if http.enabled and http.token is None and not is_loopback(http.host):
        raise HttpConfigError(
            "http_token_required",
            f"http.host is {http.host}, which is reachable from other machines, but no "
            "http.token is set: set LIVER_AGENT__HTTP__TOKEN (or http.token in the settings "
            "file), or listen on 127.0.0.1",
        )


def token_file(settings: Settings) -> Path:
    """Where a generated token is kept: next to the SQLite database, else next to the spool."""
    url = make_url(settings.database.url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent / TOKEN_FILE_NAME
    return settings.spool.path.parent / TOKEN_FILE_NAME


def resolve_token(settings: Settings, *, create: bool = True) -> ResolvedToken | None:
    """The token in force: the settings' one, else the token file (made if ``create``).

    Returns None only when no token is set, no file exists and ``create`` is False.
    """
    if settings.http.token is not None:
        return ResolvedToken(settings.http.token.get_secret_value(), TokenSource.SETTINGS, None)
    path = token_file(settings)
    existing = _read_token_file(path)
    if existing is not None:
        return ResolvedToken(existing, TokenSource.FILE, path)
    if not create:
        return None
    value = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # another process made it between our read and now: use theirs
        raced = _read_token_file(path)
        if raced is None:
            raise HttpConfigError(
                "http_token_unreadable", f"the token file {path} exists but is empty"
            ) from None
        return ResolvedToken(raced, TokenSource.FILE, path)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    logger.warning(
        "no http.token configured: generated an API token into %s (mode 0600); "
        "`liver-agent http token --show` prints it",
        path,
    )
    return ResolvedToken(value, TokenSource.GENERATED, path)


def _read_token_file(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise HttpConfigError(
            "http_token_unreadable", f"cannot read the token file {path}: {err}"
        ) from err
    return text or None


class TokenChecker:
    """Checks bearer tokens and session cookies against the token in force (constant time)."""

    def __init__(self, token: str) -> None:
        if len(token) < 8:
            raise HttpConfigError(
                "http_token_too_short", "http.token must be at least 8 characters long"
            )
        self._token = token.encode("utf-8")
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
