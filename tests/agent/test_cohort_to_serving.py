"""From a site's labelling package to the serving model: ``train cls --cohort`` (tiny) ->
``evaluate cls --cohort`` -> ``model install`` -> ``model use``, while the agent's worker is
running; the next phantom study through the real worker is classified by the installed model,
whose name and version the job and the SR carry, and the job before it keeps the old one."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread
from typer.testing import CliRunner

from agent.cli import app
from agent.context import AgentContext, open_context
from agent.worker import Worker
from pipeline.bundle import load_bundle
from pipeline.phantoms import PhantomStudy
from pipeline.run import Models
from storage.models import Job, JobStatus
from tests.agent.http_data import complete, ingest, settings_for
from tests.bundles import write_test_bundles
from tests.cli_output import unwrapped
from tests.cohort_package import write_cohort_package
from tests.integration.truth_agent import files_of, truth_load, truth_phantom

SITE_NAME = "site-cirrhosis"
SITE_VERSION = "2026.12-test"


@pytest.fixture
def truth_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The phantoms' true liver masks stand in for the untrained segmentation network; the
    classifiers are loaded from their bundles and run as in production."""
    masks = tmp_path / "masks"
    monkeypatch.setattr(Models, "load", truth_load(masks))
    monkeypatch.delenv("LIVER_AGENT_CONFIG", raising=False)
    return masks


def _cli(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return unwrapped(result.output)


def _run_job(ctx: AgentContext, worker: Worker, study: PhantomStudy) -> Job:
    ingest(ctx, [dcmread(f) for f in files_of(study)])
    job_id = complete(ctx, study.study_instance_uid)
    assert worker.run_one()
    with ctx.sessions() as session:
        job = session.get_one(Job, job_id)
        _ = job.outputs
        return job


def _sr_models(job: Job) -> list[str]:
    (sr,) = [o for o in job.outputs if o.kind == "sr"]
    assert sr.path is not None
    ds = dcmread(sr.path)
    return [str(item.ContributionDescription) for item in ds.ContributingEquipmentSequence]


@pytest.mark.slow  # trains a ResNet50 for one epoch on 32 x 32 slices (well under a minute)
def test_a_package_becomes_the_serving_classifier(tmp_path: Path, truth_masks: Path) -> None:
    package = tmp_path / "package"
    studies = write_cohort_package(package, per_class=5, matrix=48, slices=20)
    trained = tmp_path / "trained"
    out = _cli(
        "train", "cls", "--cohort", package, "--labels", "labels.csv", "--out", trained,
        "--epochs", "1", "--input-size", "32", "--batch-size", "8", "--device", "cpu",
        "--name", SITE_NAME, "--version", SITE_VERSION, "--quiet",
    )  # fmt: skip
    assert "class balance: 5 cirrhosis / 5 no cirrhosis studies" in out
    bundle = load_bundle(trained)
    card = bundle.manifest.training.settings["model_card"]
    assert card["cohort"] == "package"
    assert card["counts"]["studies"] == len(studies)
    split = bundle.manifest.training.split
    assert sorted(split.train + split.val + split.test) == sorted(s.study_uid for s in studies)
    assert set(card["metrics"]) == {"val", "test"}
    assert card["metrics"]["test"]["n"] == len(split.test)
    for key in ("val_accuracy", "test_accuracy", "test_sensitivity", "test_specificity"):
        assert key in bundle.manifest.training.metrics
    manifest_text = (trained / "manifest.json").read_text()
    assert not any(s.accession in manifest_text for s in studies)  # no accessions, no patients
    assert not any(f'"{s.patient_key}"' in manifest_text for s in studies)

    report = tmp_path / "report"
    _cli(
        "evaluate", "cls", "--cohort", package, "--labels", "labels.csv", "--model", trained,
        "--out", report, "--device", "cpu",
    )  # fmt: skip
    data = json.loads((report / "report.json").read_text())
    assert data["n"] == len(split.test)
    assert [c["study_uid"] for c in data["cases"]] == split.test
    cm = data["confusion"]
    assert data["accuracy"]["value"] == (cm["tp"] + cm["tn"]) / cm["n"]
    assert data["model_name"] == SITE_NAME
    assert (report / "report.html").is_file()

    seg, cls = write_test_bundles(tmp_path / "bundles")
    result = CliRunner().invoke(
        app,
        ["evaluate", "cls", "--cohort", str(package), "--model", str(cls), "--out",
         str(tmp_path / "elsewhere")],
    )  # fmt: skip
    assert result.exit_code == 1  # a bundle trained elsewhere has no test part here
    assert "evaluate every labelled study with --split all" in unwrapped(result.output)
    settings = settings_for(
        tmp_path,
        model={"segmentation": seg, "classification": cls, "device": "cpu",
               "store": tmp_path / "store"},
    )  # fmt: skip
    config = tmp_path / "liver-agent.yaml"
    config.write_text(yaml.safe_dump({"model": {"store": str(tmp_path / "store")}}))
    ctx = open_context(settings)
    try:
        ctx.models.get(timeout=300)
        worker = Worker(
            settings, ctx.sessions, ctx.spool, ctx.models, ctx.metrics, threading.Event(), "w1"
        )
        before = _run_job(
            ctx, worker, truth_phantom(tmp_path / "s1", truth_masks, seed=11, roles=("ax_t2",))
        )
        assert before.model_name == "test-classification-untrained"

        out = _cli("model", "install", trained, "--config", config)
        assert f"installed: {SITE_NAME} {SITE_VERSION} (classification)" in out
        out = _cli("model", "use", SITE_NAME, SITE_VERSION, "--config", config)
        assert "no restart needed" in out

        after = _run_job(
            ctx, worker, truth_phantom(tmp_path / "s2", truth_masks, seed=12, roles=("ax_t2",))
        )
        assert after.status in (JobStatus.DONE, JobStatus.DELIVERING)
        assert after.evaluated is True
        assert (after.model_name, after.model_version) == (SITE_NAME, SITE_VERSION)
        assert after.model_demo is False
        assert after.label is not None
        assert after.probability is not None
        assert any(
            f"classification model {SITE_NAME} {SITE_VERSION}" in d for d in _sr_models(after)
        )
        with ctx.sessions() as session:  # the earlier job still names the model that made it
            earlier = session.get_one(Job, before.id)
            assert earlier.model_name == "test-classification-untrained"
        assert any("test-classification-untrained" in d for d in _sr_models(before))
    finally:
        ctx.ingestor.close()
        ctx.engine.dispose()
