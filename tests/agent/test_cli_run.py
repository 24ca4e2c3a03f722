"""``liver-agent run``: one study folder in, result printed and result objects written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from pydicom import dcmread
from typer.testing import CliRunner

from agent.cli import run as run_cli
from pipeline.phantoms import PhantomStudy, generate_study
from pipeline.run import Models
from tests.pipeline.test_run import FIVE_ROLES, StandInClassification, StandInSegmentation


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> PhantomStudy:
    out = tmp_path_factory.mktemp("phantom") / "study"
    return generate_study(out, cirrhotic=False, seed=5, roles=FIVE_ROLES, axial_t2_slices=24,
                          matrix=96)  # fmt: skip


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.delenv("LIVER_AGENT_CONFIG", raising=False)
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app with only the run command."""

    run_cli.register(app)
    return app


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch, phantom: PhantomStudy) -> list[tuple[Any, ...]]:
    """Models.load gives stand-in networks (the phantom's true mask); records its arguments."""
    calls: list[tuple[Any, ...]] = []

    def load(
        cls: type[Models],
        segmentation: Path,
        classification: Path,
        device: str,
        runtime: str = "torch",
        cache: Path | None = None,
    ) -> Models:
        calls.append((segmentation, classification, device))
        return Models(StandInSegmentation(phantom.liver_mask), StandInClassification())  # type: ignore[arg-type]

    monkeypatch.setattr(Models, "load", classmethod(load))
    return calls


def invoke(app: typer.Typer, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["run", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_result_and_objects_written(
    app: typer.Typer, phantom: PhantomStudy, loaded: list[tuple[Any, ...]], tmp_path: Path
) -> None:
    seg, cls = tmp_path / "seg", tmp_path / "cls"
    out = tmp_path / "out"
    code, stdout, stderr = invoke(
        app, str(phantom.path), "--out", str(out), "--json",
        "--seg-model", str(seg), "--cls-model", str(cls), "--device", "cpu",
    )  # fmt: skip
    assert code == 0, stderr
    assert loaded == [(seg, cls, "cpu")]
    data = json.loads(stdout)
    assert data["evaluated"] is True
    assert data["series"]["series_instance_uid"] == phantom.target_series_uid
    assert data["slice"]["sop_instance_uid"]
    assert 0 <= data["classification"]["probability"] <= 1
    assert data["models"]["segmentation"]["name"] == "stand-in-segmentation"
    assert {"select", "load", "segment", "localise", "classify", "total", "scan", "outputs"} <= set(
        data["timings"]
    )
    written = sorted(Path(p).name for p in data["outputs"])
    assert written == ["seg.dcm", "sr.dcm"]
    seg_ds = dcmread(out / "seg.dcm")
    assert seg_ds.Modality == "SEG"
    assert str(seg_ds.StudyInstanceUID) == phantom.study_instance_uid


def test_text_output_for_people_with_settings_models(
    app: typer.Typer,
    phantom: PhantomStudy,
    loaded: list[tuple[Any, ...]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVER_AGENT__MODEL__SEGMENTATION", str(tmp_path / "s"))
    monkeypatch.setenv("LIVER_AGENT__MODEL__CLASSIFICATION", str(tmp_path / "c"))
    monkeypatch.setenv("LIVER_AGENT__MODEL__DEVICE", "cpu")
    code, stdout, stderr = invoke(app, str(phantom.path), "--out", str(tmp_path / "o"), "--sc")
    assert code == 0, stderr
    assert loaded == [(tmp_path / "s", tmp_path / "c", "cpu")]
    assert phantom.target_series_uid is not None
    assert phantom.target_series_uid in stdout
    assert "probability" in stdout
    assert "DEMO" in stdout  # the stand-in model infos say demo
    assert "sc.dcm" in stdout
    assert (tmp_path / "o" / "sc.dcm").is_file()


def test_no_axial_t2_exits_0_not_evaluated(
    app: typer.Typer, loaded: list[tuple[Any, ...]], tmp_path: Path
) -> None:
    study = generate_study(tmp_path / "s", cirrhotic=False, seed=1, roles=("localizer", "dwi"),
                           matrix=64)  # fmt: skip
    code, stdout, stderr = invoke(
        app, str(study.path), "--out", str(tmp_path / "o"), "--json",
        "--seg-model", "a", "--cls-model", "b",
    )  # fmt: skip
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["evaluated"] is False
    assert data["reason_code"] == "no_axial_t2"
    assert len(data["selection"]["candidates"]) == 2
    assert [Path(p).name for p in data["outputs"]] == ["not_evaluated_sr.dcm"]


def test_folder_without_dicom_is_not_evaluated(app: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not DICOM")
    code, stdout, _ = invoke(app, str(tmp_path), "--out", str(tmp_path / "o"), "--json")
    assert code == 0
    data = json.loads(stdout)
    assert (data["evaluated"], data["reason_code"]) == (False, "no_dicom")


def test_failure_exits_1_with_code_on_stderr(
    app: typer.Typer, phantom: PhantomStudy, tmp_path: Path
) -> None:
    code, stdout, stderr = invoke(
        app, str(phantom.path), "--out", str(tmp_path / "o"),
        "--seg-model", str(tmp_path / "none1"), "--cls-model", str(tmp_path / "none2"),
    )  # fmt: skip
    assert code == 1
    assert "[bundle_missing]" in stderr
    assert stdout == ""


def test_unwritable_out_exits_1(
    app: typer.Typer, phantom: PhantomStudy, loaded: list[tuple[Any, ...]], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    code, _, stderr = invoke(
        app,
        str(phantom.path),
        "--out",
        str(blocker / "out"),
        "--seg-model",
        "a",
        "--cls-model",
        "b",
    )
    assert code == 1
    assert "[output_write]" in stderr


def test_a_segmentation_model_alone_pairs_with_the_demo_classifier(
    app: typer.Typer,
    phantom: PhantomStudy,
    loaded: list[tuple[Any, ...]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.training.demo import CLASSIFICATION_DIR, demo_key
    from tests.bundles import write_test_bundles

    cache = tmp_path / "cache"
    demo = cache / f"demo-{demo_key()}"  # DEMO bundles as if built before (tests: tiny ones)
    write_test_bundles(demo, demo=True)
    monkeypatch.setenv("LIVER_AGENT__MODEL__CACHE_DIR", str(cache))
    code, _, stderr = invoke(
        app, str(phantom.path), "--out", str(tmp_path / "o"), "--seg-model", str(tmp_path / "s")
    )
    assert code == 0, stderr
    assert loaded == [(tmp_path / "s", demo / CLASSIFICATION_DIR, "auto")]
    assert "DEMO" in stderr
