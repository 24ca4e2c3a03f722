"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.factory import write_series
from tests.pg import PostgresServer


@pytest.fixture
def phantom_study_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A small multi-series study as files (three series of one study)."""
    root = tmp_path_factory.mktemp("study")
    study_uid = generate_uid()
    files: list[Path] = []
    for n, count in enumerate((3, 12, 6)):
        files += write_series(root / f"s{n}", count, study_uid=study_uid, rows=64, columns=64)
    return files


@pytest.fixture(scope="session")
def chaos_segmentation_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real-anatomy (non-DEMO) segmentation bundle trained on CHAOS subjects 1 and 5;
    skips where the shared CHAOS data is absent."""
    from tests.chaos import CHAOS, train_tiny_chaos_bundle

    if not CHAOS.is_dir():
        pytest.skip(f"CHAOS data not present ({CHAOS})")
    return train_tiny_chaos_bundle(tmp_path_factory.mktemp("chaos-bundle") / "segmentation")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the whole session (tests/pg.py); skips where the
    binaries are not installed."""
    from tests.pg import SKIP_REASON, find_bin_dir, start_server

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(SKIP_REASON)
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install '.[postgres]')")
    server = start_server(bin_dir)
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new empty database on the throwaway server, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
