"""``train cls --cohort`` and ``evaluate cls --cohort`` refuse bad input with one clear line
before any training starts: labels of other studies, labels other than 0/1, missing columns,
too few cases per class, an unclear data source."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from tests.cli_output import unwrapped
from tests.cohort_package import rewrite_labels, write_cohort_package


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "package"
    write_cohort_package(out, per_class=4, matrix=48, slices=20)
    return out


def _train(package: Path, labels: Path | str, out: Path, *extra: str) -> tuple[int, str]:
    args = ["train", "cls", "--cohort", str(package), "--labels", str(labels), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--epochs", "1", "--quiet", *extra])
    return result.exit_code, unwrapped(result.output)


@pytest.mark.parametrize(
    ("edit", "drop", "words"),
    [
        ({0: {"study_uid": "1.2.3.4"}}, "", ["UID(s) not in the package", "[labels_unknown]"]),
        ({0: {"accession": "X1"}}, "", ["accession(s) that do not match", "[labels_unknown]"]),
        ({4: {"label": "yes"}}, "", ["row 6", "label 'yes' is not 0 or 1", "[labels_value]"]),
        ({}, "study_uid", ["missing column(s) study_uid", "[labels_columns]"]),
        (
            {n: {"label": "0"} for n in range(2, 8)},
            "",
            ["too few cases per class", "1 patient(s) labelled 1", "[labels_too_few]"],
        ),
    ],
)
def test_train_refuses_a_bad_labels_file_before_training(
    package: Path,
    tmp_path: Path,
    edit: dict[int, dict[str, str]],
    drop: str,
    words: list[str],
) -> None:
    labels = rewrite_labels(package / "labels.csv", tmp_path / "labels.csv", edit, drop)
    code, out = _train(package, labels, tmp_path / "bundle")
    assert code == 1
    assert out.startswith("error:")
    for word in words:
        assert word in out
    assert not (tmp_path / "bundle").exists()


def test_the_data_source_and_the_report_folder_must_be_clear(package: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["train", "cls", "--data", str(tmp_path), "--cohort", str(package), "--out",
         str(tmp_path / "b")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "give either --data DIR or --cohort OUT" in unwrapped(result.output)
    result = CliRunner().invoke(app, ["train", "cls", "--out", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert "give either --data DIR or --cohort OUT" in unwrapped(result.output)
    existing = tmp_path / "exists"
    existing.mkdir()
    code, out = _train(package, "labels.csv", existing)
    assert code == 1
    assert "exists; choose another folder or add --overwrite" in out
    result = CliRunner().invoke(
        app, ["evaluate", "cls", "--cohort", str(package), "--model", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "--cohort needs --out REPORT_DIR" in unwrapped(result.output)
    result = CliRunner().invoke(
        app,
        ["evaluate", "cls", "--cohort", str(package), "--model", str(tmp_path), "--out",
         str(tmp_path / "report")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "manifest.json is missing: not a model bundle" in unwrapped(result.output)
