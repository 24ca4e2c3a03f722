"""Storage tests run on a real SQLite file (WAL), as the agent does, and on a throwaway
PostgreSQL server (tests/pg.py): every test that uses ``database`` runs on both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, make_sessionmaker, upgrade


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'agent.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def connect(database: str) -> Iterator[Callable[[], sessionmaker[Session]]]:
    """Open another engine on the same database: one per simulated process."""
    engines: list[Engine] = []

    def open_one() -> sessionmaker[Session]:
        engine = make_engine(database)
        engines.append(engine)
        return make_sessionmaker(engine)

    yield open_one
    for engine in engines:
        engine.dispose()


@pytest.fixture
def sessions(connect: Callable[[], sessionmaker[Session]]) -> sessionmaker[Session]:
    return connect()
