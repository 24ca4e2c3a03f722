"""The last step of the hostile suite: every row of the table holds (the table itself is
printed by ``pytest_terminal_summary`` in conftest.py). Runs after the other modules (name)."""

from __future__ import annotations

import pytest

from tests.hostile.ledger import Ledger

pytestmark = [pytest.mark.hostile, pytest.mark.integration]


def test_every_row_of_the_table_holds(ledger: Ledger) -> None:
    if not ledger.rows:
        pytest.skip("no hostile row ran in this session")
    failing = ledger.failing()
    assert not failing, "rows that do not hold:\n" + "\n".join(ledger.table())
    assert all(r.tried > 0 and r.lost == 0 for r in ledger.rows)
