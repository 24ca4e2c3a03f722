"""Integration tests start real processes; they need the Debian packages (make system-packages)."""

from __future__ import annotations

import shutil

import pytest

from tests.integration.processes import ECHOSCU, STORESCP, STORESCU


@pytest.fixture(scope="session", autouse=True)
def _dcmtk_installed() -> None:
    missing = [tool for tool in (ECHOSCU, STORESCU, STORESCP) if not shutil.which(tool)]
    if missing:
        pytest.fail(f"DCMTK tools missing: {missing}; run `make system-packages` (needs root)")
