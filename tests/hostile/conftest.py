"""The hostile suite (``-m hostile``): a shared agent for the bad-input corpus, association
and HTTP abuse, and the table of every row printed (and checked) at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bundles import write_test_bundles
from tests.hostile.helpers import ACSE_TIMEOUT, MAX_ASSOCIATIONS
from tests.hostile.ledger import LEDGER, Ledger
from tests.integration.truth_agent import TruthAgentProcess, running_truth_agent


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return LEDGER


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not LEDGER.rows:
        return
    terminalreporter.section("hostile suite: tried / handled / lost")
    for line in LEDGER.table():
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if LEDGER.failing() and exitstatus == 0:
        session.exitstatus = 1  # a row that does not hold fails the run


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_test_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="session")
def masks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("masks")


@pytest.fixture(scope="session")
def shared_agent(
    tmp_path_factory: pytest.TempPathFactory, bundles: tuple[Path, Path], masks: Path
) -> Iterator[TruthAgentProcess]:
    """One ``liver-agent serve`` (true liver masks for phantoms, test bundles) that the corpus,
    association and HTTP rows share: short negotiation timeouts, a small association limit."""
    with running_truth_agent(
        tmp_path_factory.mktemp("shared") / "agent",
        masks,
        bundles,
        dicom={
            "max_associations": MAX_ASSOCIATIONS,
            "acse_timeout": ACSE_TIMEOUT,
            "network_timeout": 4.0,
            "dimse_timeout": 10.0,
        },
        spool={"min_free_mb": 0},
        completion={"quiet_seconds": 0.5, "stable_seconds": 6.0, "poll_seconds": 0.2},
    ) as agent:
        yield agent
