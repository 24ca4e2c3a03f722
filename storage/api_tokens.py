"""Queries of the named API tokens (``api_tokens``): add, find by hash, list, revoke."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ApiToken, utcnow


def add_token(
    session: Session, *, name: str, role: str, token_sha256: str, created_by: str
) -> ApiToken:
    """Record a new token (its hash only)."""
    row = ApiToken(name=name, role=role, token_sha256=token_sha256, created_by=created_by)
    session.add(row)
    session.flush()
    return row


def token_by_name(session: Session, name: str) -> ApiToken | None:
    return session.scalars(select(ApiToken).where(ApiToken.name == name)).first()


def active_token_by_hash(session: Session, token_sha256: str) -> ApiToken | None:
    """The token with this hash, unless it was revoked."""
    return session.scalars(
        select(ApiToken).where(ApiToken.token_sha256 == token_sha256, ApiToken.revoked_at.is_(None))
    ).first()


def active_token_by_id(session: Session, token_id: int) -> ApiToken | None:
    return session.scalars(
        select(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
    ).first()


def list_tokens(session: Session, *, include_revoked: bool = True) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(query))


def revoke_token(session: Session, name: str) -> ApiToken | None:
    """Mark the token ``name`` revoked (from now on); None if there is no such token."""
    row = token_by_name(session, name)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row
