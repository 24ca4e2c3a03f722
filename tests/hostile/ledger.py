"""The hostile suite's table: one row per kind of abuse tried (category, input, how many
times, how many the agent handled, how many acknowledged objects it lost), printed at the end
of the run (``pytest_terminal_summary`` in conftest.py) and checked row by row."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    """One line of the table.

    Attributes
    ----------
    category, input
        What was tried ("bad input", "truncated file").
    tried, handled
        How many attempts; how many the agent answered as it should (a failure status with a
        reason, a refusal, a 4xx, a retry) while staying up.
    lost
        Acknowledged objects (or jobs) that went missing.
    crashed
        The agent process died unasked.
    outside
        Files written outside the agent's spool, results and database (paths).
    note
        What "handled" meant for this row.
    """

    category: str
    input: str
    tried: int = 0
    handled: int = 0
    lost: int = 0
    crashed: bool = False
    outside: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def holds(self) -> bool:
        return (
            self.tried > 0
            and self.handled == self.tried
            and self.lost == 0
            and not self.crashed
            and not self.outside
        )

    def problems(self) -> str:
        found = []
        if self.tried == 0:
            found.append("nothing tried")
        if self.handled != self.tried:
            found.append(f"{self.tried - self.handled} not handled")
        if self.lost:
            found.append(f"{self.lost} lost")
        if self.crashed:
            found.append("agent crashed")
        if self.outside:
            found.append(f"files outside the spool: {self.outside[:3]}")
        return "; ".join(found)


class Ledger:
    """Every row of the session, in the order they were recorded."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def row(self, category: str, input: str, note: str = "") -> Row:
        row = Row(category, input, note=note)
        self.rows.append(row)
        return row

    def failing(self) -> list[Row]:
        return [r for r in self.rows if not r.holds]

    def table(self) -> list[str]:
        """The table as plain lines (fixed widths, no terminal-width dependence)."""
        head = f"{'category':<12} {'input':<44} {'tried':>5} {'handled':>7} {'lost':>4}  holds"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            mark = "yes" if r.holds else f"NO: {r.problems()} ({r.note})"
            counts = f"{r.tried:>5} {r.handled:>7} {r.lost:>4}"
            lines.append(f"{r.category:<12} {r.input[:44]:<44} {counts}  {mark}")
        total_tried = sum(r.tried for r in self.rows)
        total_handled = sum(r.handled for r in self.rows)
        total_lost = sum(r.lost for r in self.rows)
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<12} {f'{len(self.rows)} rows':<44} {total_tried:>5} {total_handled:>7} "
            f"{total_lost:>4}  {'every row holds' if not self.failing() else 'ROWS FAIL'}"
        )
        return lines


#: the session's ledger (the conftest hook prints it)
LEDGER = Ledger()
