"""Engine and session factory; SQLite in WAL mode or PostgreSQL (psycopg 3, pooled); Alembic
migrations applied on demand, under an advisory lock on PostgreSQL so that agents starting
together migrate once."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from storage.locks import wait_transaction_lock

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(
    url: str,
    *,
    sqlite_synchronous: str = "NORMAL",
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout: float = 30.0,
    pool_recycle: float = 1800.0,
) -> Engine:
    """Create the engine. For SQLite: WAL, foreign keys, a busy timeout, the parent folder.
    For a server database (PostgreSQL): a connection pool whose connections are checked
    before use (a restarted server or a dropped connection is not an error for the caller).

    Parameters
    ----------
    url
        SQLAlchemy URL, e.g. ``sqlite:///var/liver-agent.db`` (relative to the working directory).
    sqlite_synchronous
        ``NORMAL`` (the default; commits are made durable by the next flush of the file
        system, which the ingest does before it acknowledges) or ``FULL``.
    pool_size, max_overflow, pool_timeout, pool_recycle
        The connection pool of a server database (SQLAlchemy's ``QueuePool``): connections
        kept open, extra ones allowed at peaks, seconds to wait for a free one, and seconds
        after which a connection is replaced. Unused for SQLite.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            _create_owner_only(Path(database))
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs.update(
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_recycle=pool_recycle,
            pool_pre_ping=True,
        )
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        if sqlite_synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"sqlite_synchronous must be FULL or NORMAL, not {sqlite_synchronous}")

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own BEGIN handling defers the lock; issue BEGIN IMMEDIATE ourselves
            # so writers queue on the busy timeout instead of failing on lock upgrade.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _create_owner_only(database: Path) -> None:
    """Create a new SQLite database file readable by its owner only (0600); SQLite gives its
    write-ahead log and shared-memory files the database file's permissions."""
    if database.exists():
        return
    if not database.parent.exists():
        database.parent.parent.mkdir(parents=True, exist_ok=True)
        database.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(database, os.O_WRONLY | os.O_CREAT, 0o600)  # an empty file is an empty database
    os.close(fd)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


MIGRATION_LOCK = "migrate"


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Apply Alembic migrations up to ``revision``; return the revision the database was at.

    On PostgreSQL the migrations run in one transaction that first waits for an advisory
    lock: of several agents starting together, one migrates and the others wait, then find
    the schema at the head and do nothing. (DDL is transactional there: a failed migration
    leaves the schema as it was.)
    """
    cfg = _alembic_config()
    with engine.begin() as conn:
        wait_transaction_lock(conn, MIGRATION_LOCK)
        before = MigrationContext.configure(conn).get_current_revision()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    if before != head_revision():
        logger.info("database migrated from %s to %s", before or "empty", revision)
    return before


def downgrade(engine: Engine, revision: str) -> None:
    """Revert Alembic migrations down to ``revision`` (tests; an admin's way back)."""
    cfg = _alembic_config()
    with engine.begin() as conn:
        wait_transaction_lock(conn, MIGRATION_LOCK)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def ping(engine: Engine) -> None:
    """Run ``SELECT 1``; raises the driver's error (wrapped by SQLAlchemy) when unreachable."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()
