"""``liver-agent select``: JSON for scripts, a table for people, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from pydicom.uid import generate_uid
from test_selection_headers import CORONAL, write_series
from typer.testing import CliRunner

from agent.cli import select as select_cli


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.delenv("LIVER_AGENT_CONFIG", raising=False)
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app with only the select command."""

    select_cli.register(app)
    return app


def run(app: typer.Typer, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["select", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_names_the_chosen_series_and_every_candidate(app: typer.Typer, tmp_path: Path) -> None:
    s = generate_uid()
    cor = write_series(tmp_path, s, 1, "t2_haste_cor", iop=CORONAL, te=92)
    ax = write_series(tmp_path, s, 2, "t2_haste_tra", te=92)
    code, out, _ = run(app, str(tmp_path), "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"series_instance_uid", "candidates"}
    assert data["series_instance_uid"] == ax.uid
    assert [c["series_instance_uid"] for c in data["candidates"]] == [ax.uid, cor.uid]
    first = data["candidates"][0]
    assert set(first) == {"series_instance_uid", "description", "score", "eligible", "reasons"}
    assert first["description"] == "t2_haste_tra"
    assert first["eligible"] is True
    assert "rejected: coronal (normal 0 deg from y)" in data["candidates"][1]["reasons"]


def test_no_axial_t2_prints_null_and_exits_0(app: typer.Typer, tmp_path: Path) -> None:
    write_series(tmp_path, generate_uid(), 1, "t2_haste_cor", iop=CORONAL, te=92)
    code, out, _ = run(app, str(tmp_path), "--json")
    assert code == 0
    assert json.loads(out)["series_instance_uid"] is None

    code, out, _ = run(app, str(tmp_path))
    assert code == 0
    assert "no axial T2-weighted series" in out
    assert "rejected" in out


def test_table_says_why_this_series_and_why_not(app: typer.Typer, tmp_path: Path) -> None:
    s = generate_uid()
    write_series(tmp_path, s, 1, "ep2d_diff_tra", te=66, scanning_sequence="EP", b_values=[50, 800])
    ax = write_series(tmp_path, s, 2, "t2_haste_tra", te=92)
    (tmp_path / "notes.txt").write_text("hello")
    code, out, _ = run(app, str(tmp_path))
    assert code == 0
    assert "why this series / why not" in out
    assert f"chosen: series 2 't2_haste_tra' ({ax.uid})" in out
    assert "rejected: diffusion (b-values 50/800" in out
    assert "1 file(s) skipped: notes.txt: not a DICOM file" in out


def test_rules_option_changes_the_choice(app: typer.Typer, tmp_path: Path) -> None:
    s = generate_uid()
    study = tmp_path / "study"
    write_series(study, s, 1, "t2_haste_tra", te=92)
    fs = write_series(study, s, 2, "t2_tse_tra_fs", te=84, tr=3000)
    rules = tmp_path / "rules.yaml"
    rules.write_text("checks:\n  fat_suppressed: {score: 20}\n")
    code, out, _ = run(app, str(study), "--json", "--rules", str(rules))
    assert code == 0
    assert json.loads(out)["series_instance_uid"] == fs.uid


def test_rules_from_the_settings_file(app: typer.Typer, tmp_path: Path) -> None:
    s = generate_uid()
    study = tmp_path / "study"
    write_series(study, s, 1, "t2_haste_tra", te=92)
    fs = write_series(study, s, 2, "t2_tse_tra_fs", te=84, tr=3000)
    rules = tmp_path / "rules.yaml"
    rules.write_text("checks:\n  fat_suppressed: {score: 20}\n")
    config = tmp_path / "agent.yaml"
    config.write_text(f"pipeline:\n  selection_rules: {rules}\n")
    code, out, _ = run(app, str(study), "--json", "--config", str(config))
    assert code == 0
    assert json.loads(out)["series_instance_uid"] == fs.uid


def test_errors_exit_2_with_a_message(app: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images")
    code, out, err = run(app, str(tmp_path), "--json")
    assert code == 2
    assert out == ""
    assert "no usable DICOM file" in err
    assert "no_dicom" in err

    bad = tmp_path / "bad.yaml"
    bad.write_text("checks:\n  contrast: {reject: perhaps}\n")
    write_series(tmp_path / "study", generate_uid(), 1, "t2", te=92)
    code, _, err = run(app, str(tmp_path / "study"), "--rules", str(bad))
    assert code == 2
    assert "checks.contrast.reject" in err

    code, _, _ = run(app, str(tmp_path / "missing"))
    assert code == 2
