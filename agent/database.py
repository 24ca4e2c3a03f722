"""The database engine an agent process opens from its settings (SQLite or PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import Engine

from agent.settings import Settings
from storage.db import make_engine


def make_database_engine(settings: Settings) -> Engine:
    """The engine for ``settings.database`` (pool settings apply to PostgreSQL)."""
    db = settings.database
    return make_engine(
        db.url,
        sqlite_synchronous=db.sqlite_synchronous,
        pool_size=db.pool_size,
        max_overflow=db.pool_max_overflow,
        pool_timeout=db.pool_timeout_seconds,
        pool_recycle=db.pool_recycle_seconds,
    )
