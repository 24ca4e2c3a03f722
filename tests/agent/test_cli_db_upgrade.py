"""``liver-agent db upgrade`` on SQLite and PostgreSQL: the first run creates the schema, the
next finds it at the head; ``serve --role`` accepts only the three roles."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agent.cli import app
from storage.db import head_revision


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'var' / 'agent.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    path = tmp_path / "liver-agent.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": url}}))
    return path


def test_db_upgrade_creates_then_finds_the_head(config: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["db", "upgrade", "--config", str(config)])
    assert first.exit_code == 0, first.output
    assert f"database at revision {head_revision()} (was empty)" in first.output
    again = runner.invoke(app, ["db", "upgrade", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert f"(was {head_revision()})" in again.output


def test_serve_refuses_an_unknown_role(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--role", "supervisor"])
    assert result.exit_code == 2
    assert "supervisor" in result.output
