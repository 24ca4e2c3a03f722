"""Queries of the model deployment-mode audit trail (``model_mode_changes``, append-only)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import ModelModeChange


def add_mode_change(
    session: Session, *, model_name: str, mode: str, actor: str, reason: str
) -> ModelModeChange:
    """Append one switch of ``model_name`` to ``mode``; it is in force from now on."""
    row = ModelModeChange(model_name=model_name, mode=mode, actor=actor, reason=reason)
    session.add(row)
    session.flush()
    return row


def latest_changes(session: Session, names: list[str] | None = None) -> dict[str, ModelModeChange]:
    """The newest switch of each model (of ``names`` only, when given)."""
    newest = select(func.max(ModelModeChange.id)).group_by(ModelModeChange.model_name)
    if names is not None:
        newest = newest.where(ModelModeChange.model_name.in_(names))
    rows = session.scalars(select(ModelModeChange).where(ModelModeChange.id.in_(newest)))
    return {row.model_name: row for row in rows}


def mode_changes(
    session: Session, *, model_name: str | None = None, limit: int = 100
) -> list[ModelModeChange]:
    """The audit trail, newest first (of one model when ``model_name`` is given)."""
    query = select(ModelModeChange).order_by(ModelModeChange.id.desc()).limit(limit)
    if model_name is not None:
        query = query.where(ModelModeChange.model_name == model_name)
    return list(session.scalars(query))
