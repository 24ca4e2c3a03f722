"""The CLI's console: no wrapping when the output is not a terminal, whatever ``$COLUMNS`` says."""

from __future__ import annotations

import io

import pytest
from rich.table import Table

from agent.cli._common import PIPE_WIDTH, CliConsole


def test_piped_output_does_not_wrap_at_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = io.StringIO()
    console = CliConsole(file=out)
    path = "/tmp/" + "/".join(["a-rather-long-folder-name"] * 12)
    console.print(f"error: {path} is not empty: choose a new folder", highlight=False)
    assert out.getvalue() == f"error: {path} is not empty: choose a new folder\n"
    assert console.width == PIPE_WIDTH


def test_piped_table_keeps_cells_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "20")
    out = io.StringIO()
    table = Table("series", "why")
    table.add_row("t2_haste_tra_mbh_long_description", "axial T2-weighted, highest score")
    CliConsole(file=out).print(table)
    assert "t2_haste_tra_mbh_long_description" in out.getvalue()
    assert "axial T2-weighted, highest score" in out.getvalue()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_still_wraps_at_its_width() -> None:
    out = _Terminal()
    console = CliConsole(file=out, width=30, force_terminal=True)
    console.print("word " * 20, highlight=False)
    assert console.width == 30
    assert max(len(line) for line in out.getvalue().splitlines()) <= 30
