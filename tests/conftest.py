"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.factory import write_series


@pytest.fixture
def phantom_study_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A small multi-series study as files (three series of one study)."""
    root = tmp_path_factory.mktemp("study")
    study_uid = generate_uid()
    files: list[Path] = []
    for n, count in enumerate((3, 12, 6)):
        files += write_series(root / f"s{n}", count, study_uid=study_uid, rows=64, columns=64)
    return files
