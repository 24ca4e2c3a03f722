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


@pytest.fixture(scope="session")
def chaos_segmentation_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real-anatomy (non-DEMO) segmentation bundle trained on CHAOS subjects 1 and 5;
    skips where the shared CHAOS data is absent."""
    from tests.chaos import CHAOS, train_tiny_chaos_bundle

    if not CHAOS.is_dir():
        pytest.skip(f"CHAOS data not present ({CHAOS})")
    return train_tiny_chaos_bundle(tmp_path_factory.mktemp("chaos-bundle") / "segmentation")
