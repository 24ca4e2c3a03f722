"""The HTTP token in force: where it comes from, and the rule that refuses exposure without one.

The token is ``http.token`` from the settings, or, when none is set and the server listens on
loopback only, a random token generated at first start into ``http-token`` (mode 0600) next to
the SQLite database (``var/http-token`` by default). Used by ``liver-agent serve`` (HTTP edge)
and by ``liver-agent http token`` (CLI); how requests present it is ``agent.http.auth``.
"""

from __future__ import annotations

import enum
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from agent.errors import HttpConfigError
from agent.settings import HttpSettings, Settings, exposure_problem, is_loopback

logger = logging.getLogger(__name__)

TOKEN_FILE_NAME = "http-token"  # noqa: S105 - a file name, not a secret

__all__ = [
    "TOKEN_FILE_NAME",
    "HttpConfigError",
    "ResolvedToken",
    "TokenSource",
    "check_exposure",
    "is_loopback",
    "resolve_token",
    "token_file",
]


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


def check_exposure(http: HttpSettings) -> None:
    """Refuse to serve a non-loopback address without a configured token.

    Raises
    ------
    HttpConfigError
        ``http_token_required`` when ``http.host`` is not a loopback address and ``http.token``
        is unset.
    """
    problem = exposure_problem(http)
    if problem is not None:
        raise HttpConfigError("http_token_required", problem)


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
    """The token in ``path``, None if there is no such file.

    Raises
    ------
    HttpConfigError
        ``http_token_file_insecure`` when the group or others may read or write the file (the
        token would no longer be a secret), ``http_token_unreadable`` when it cannot be read.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise HttpConfigError(
            "http_token_unreadable", f"cannot read the token file {path}: {err}"
        ) from err
    if mode & 0o077:
        raise HttpConfigError(
            "http_token_file_insecure",
            f"the token file {path} has mode {mode:04o}: others on this machine may read the "
            f"API token. Make it owner-only with `chmod 600 {path}` (and consider a new token: "
            "delete the file and restart), or set http.token",
        )
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise HttpConfigError(
            "http_token_unreadable", f"cannot read the token file {path}: {err}"
        ) from err
    return text or None
