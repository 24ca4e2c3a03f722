"""Who calls the HTTP API and what they may do: named API tokens with roles.

Roles are ordered ``viewer`` < ``reader`` < ``admin``: a viewer reads pages and the API; a
reader may also record feedback on a job's finding; an admin may also switch model modes,
retry and cancel jobs and send studies by STOW-RS. The single shared token of the settings
or the token file (``agent.tokens``) keeps working and counts as ``admin``.

Named tokens are made by ``liver-agent http token create NAME --role ROLE``: 256 random bits,
shown once; the database keeps only their SHA-256 (``storage.api_tokens``).
"""

from __future__ import annotations

import getpass
import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agent.errors import AgentError
from storage import api_tokens
from storage.models import ApiToken

#: the identity of the single shared token (reserved: no named token may take it)
SHARED_TOKEN_NAME = "shared-token"  # noqa: S105 - a name, not a secret
TOKEN_PREFIX = "la_"  # noqa: S105 - a prefix, not a secret
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Role(StrEnum):
    """What a token may do; each role includes the ones before it."""

    VIEWER = "viewer"
    READER = "reader"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, required: Role) -> bool:
        """True when this role may do what ``required`` may."""
        return self.rank >= required.rank


_RANK = {Role.VIEWER: 0, Role.READER: 1, Role.ADMIN: 2}


class Channel(StrEnum):
    """How the caller presented the token: a bearer header (API) or the web page's cookie."""

    API = "api"
    WEB = "web"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the token's name and role, and how it came in."""

    name: str
    role: Role
    channel: Channel
    token_id: int | None = None  # None: the shared token

    @property
    def shared(self) -> bool:
        return self.token_id is None

    @property
    def actor(self) -> str:
        """The audit trail's "who": ``api:<name>`` / ``web:<name>``; the shared token keeps
        its historical ``api:token`` / ``web:session``."""
        if self.shared:
            return "api:token" if self.channel is Channel.API else "web:session"
        return f"{self.channel.value}:{self.name}"

    def allows(self, required: Role) -> bool:
        return self.role.allows(required)


class TokenError(AgentError):
    """A token that cannot be made or revoked (``token_name_invalid``, ``token_name_taken``,
    ``token_not_found``)."""


def hash_token(token: str) -> str:
    """The SHA-256 (hex) the database keeps of a token."""
    return hashlib.sha256(token.strip().encode("utf-8")).hexdigest()


def cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


def create_token(
    session: Session, name: str, role: Role, *, created_by: str
) -> tuple[ApiToken, str]:
    """Make a named token; return its row and the token itself (shown once, never stored).

    Raises
    ------
    TokenError
        ``token_name_invalid`` for a name that is not 1-64 letters, digits, ``._@-`` (starting
        with a letter or digit) or is the reserved ``shared-token``; ``token_name_taken`` when a
        token (even a revoked one) has the name.
    """
    if not _NAME.match(name) or name == SHARED_TOKEN_NAME:
        raise TokenError(
            "token_name_invalid",
            f"a token name is 1-64 letters, digits or . _ @ - (starting with a letter or a "
            f"digit) and not '{SHARED_TOKEN_NAME}': {name!r}",
        )
    if api_tokens.token_by_name(session, name) is not None:
        raise TokenError(
            "token_name_taken",
            f"a token named {name!r} exists (names are never reused, even after revoking)",
        )
    value = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        row = api_tokens.add_token(
            session,
            name=name,
            role=role.value,
            token_sha256=hash_token(value),
            created_by=created_by,
        )
    except IntegrityError as err:  # a concurrent create of the same name
        raise TokenError("token_name_taken", f"a token named {name!r} exists") from err
    return row, value


def revoke_token(session: Session, name: str) -> ApiToken:
    """Revoke the token ``name`` from now on (its web sessions end too).

    Raises
    ------
    TokenError
        ``token_not_found`` when no token has that name.
    """
    row = api_tokens.revoke_token(session, name)
    if row is None:
        raise TokenError("token_not_found", f"no token named {name!r}")
    return row


def principal_of_token(session: Session, token: str, channel: Channel) -> Principal | None:
    """The named, unrevoked token ``token`` as a caller, or None."""
    row = api_tokens.active_token_by_hash(session, hash_token(token))
    if row is None:
        return None
    return Principal(name=row.name, role=Role(row.role), channel=channel, token_id=row.id)
