"""What one agent process shares between its edges (SCP, HTTP), its workers and the CLI:
settings, database, spool, metrics, ingest and models, opened once by :func:`open_context`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from agent.database import make_database_engine
from agent.ingest import Ingestor
from agent.metrics import Metrics
from agent.model_provider import ModelProvider
from agent.retention import spool_usage
from agent.settings import Settings
from storage.db import make_sessionmaker, upgrade
from storage.spool import Spool


@dataclass
class AgentContext:
    """What the edges (SCP, HTTP) and the CLI share in one process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    spool: Spool
    metrics: Metrics
    ingestor: Ingestor
    models: ModelProvider
    wake_workers: threading.Event = field(default_factory=threading.Event)


def open_context(settings: Settings, *, migrate: bool = True) -> AgentContext:
    """Open the database (applying migrations: on PostgreSQL under an advisory lock, so
    agents starting together migrate once) and the spool."""
    engine = make_database_engine(settings)
    if migrate:
        upgrade(engine)
    sessions = make_sessionmaker(engine)
    spool = Spool(settings.spool.path, flush=settings.spool.flush)
    metrics = Metrics()
    metrics.set_spool_usage_source(lambda: spool_usage(sessions))
    ingestor = Ingestor(
        spool,
        sessions,
        metrics,
        min_free_bytes=settings.spool.min_free_mb * 2**20,
        durable_paths=_database_durable_paths(engine, settings.database.sqlite_synchronous),
    )
    return AgentContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        spool=spool,
        metrics=metrics,
        ingestor=ingestor,
        models=ModelProvider(settings.model),
    )


def _database_durable_paths(engine: Engine, synchronous: str) -> tuple[Path, ...]:
    """What the ingest barrier must flush besides the spool: SQLite's write-ahead log when
    SQLite does not flush its commits itself (``synchronous=NORMAL``)."""
    if engine.url.get_backend_name() != "sqlite" or not engine.url.database:
        return ()
    if synchronous == "FULL":
        return ()
    return (Path(f"{engine.url.database}-wal").resolve(),)
