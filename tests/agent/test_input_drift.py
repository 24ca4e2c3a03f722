"""Input drift through the real worker: a classifier bundle that records its training
distribution; a study inside it is not flagged, one from an unknown manufacturer at 3 T with an
unusual echo time is flagged with each reason, on the job page, in the API and in /metrics.
The same jobs keep the classifier's heat map as a PNG that the API serves and the page shows."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset

from agent.context import open_context
from agent.http.app import create_app
from agent.worker import Worker
from pipeline.bundle import load_bundle, save_bundle
from pipeline.input_distribution import AcquisitionValues, distribution_of
from storage.models import Job
from tests.agent.http_data import AUTH, complete, ingest, settings_for
from tests.agent.test_silent_mode import truth_masks  # noqa: F401 (fixture)
from tests.bundles import write_test_bundles
from tests.integration.truth_agent import files_of, truth_phantom


def _datasets(files: list[Path], **changes: object) -> list[Dataset]:
    out = []
    for file in files:
        ds = dcmread(file)
        for keyword, value in changes.items():
            if keyword in ds:
                setattr(ds, keyword, value)
        out.append(ds)
    return out


def _with_distribution(cls: Path, values: AcquisitionValues, out: Path) -> Path:
    bundle = load_bundle(cls)
    fields = bundle.manifest.model_dump(mode="json")
    fields["name"] = "test-classification-with-distribution"
    dist = distribution_of([values])
    assert dist is not None
    fields["training_distribution"] = dist.model_dump(mode="json")
    return save_bundle(out, fields, bundle.state_dict).path


@pytest.mark.slow
def test_drift_is_flagged_with_reasons_shown_and_counted(
    tmp_path: Path,
    truth_masks: Path,  # noqa: F811
) -> None:
    inside = truth_phantom(tmp_path / "a", truth_masks, seed=3, roles=("ax_t2",))
    outside = truth_phantom(tmp_path / "b", truth_masks, seed=4, roles=("ax_t2",))
    inside_data = _datasets(files_of(inside), MagneticFieldStrength="1.5")
    target = next(ds for ds in inside_data if ds.SeriesInstanceUID == inside.target_series_uid)
    trained = AcquisitionValues.from_dataset(target)
    assert trained.echo_time_ms is not None
    echo_time = trained.echo_time_ms
    seg, cls = write_test_bundles(tmp_path / "bundles")
    cls = _with_distribution(cls, trained, tmp_path / "bundles" / "cls-dist")
    settings = settings_for(
        tmp_path, model={"segmentation": seg, "classification": cls, "device": "cpu"}
    )
    ctx = open_context(settings)
    try:
        ctx.models.get(timeout=300)
        worker = Worker(
            settings, ctx.sessions, ctx.spool, ctx.models, ctx.metrics, threading.Event(), "w1"
        )
        ingest(ctx, inside_data)
        inside_id = complete(ctx, inside.study_instance_uid)
        assert worker.run_one()
        ingest(
            ctx,
            _datasets(
                files_of(outside),
                Manufacturer="ACME MEDICAL",
                MagneticFieldStrength="3",
                EchoTime=f"{echo_time * 2.5:g}",
            ),
        )
        outside_id = complete(ctx, outside.study_instance_uid)
        assert worker.run_one()

        with ctx.sessions() as session:
            ok = session.get_one(Job, inside_id).details["drift"]
            job = session.get_one(Job, outside_id)
            assert job.evaluated, (job.status, job.reason_code, job.reason)
            bad = job.details["drift"]
        assert ok["flagged"] is False
        assert ok["reasons"] == []
        assert ok["checked"]["series"]["manufacturer"] == trained.manufacturer
        by_model = {m["model"].split()[0]: m for m in ok["checked"]["models"]}
        assert by_model["test-segmentation-untrained"]["note"] == (
            "no training distribution recorded"
        )
        assert all(c["ok"] for c in by_model["test-classification-with-distribution"]["checks"])

        assert bad["flagged"] is True
        assert [r.split(" ")[0] for r in bad["reasons"]] == ["manufacturer", "field", "echo"]
        assert "'ACME MEDICAL'" in bad["reasons"][0]
        assert "field strength 3 T" in bad["reasons"][1]
        assert f"echo time {echo_time * 2.5:.3g} ms" in bad["reasons"][2]

        client = TestClient(create_app(ctx), headers=AUTH)
        page = client.get(f"/jobs/{outside_id}").text
        assert "INPUT DRIFT" in page
        assert 'id="drift-flag"' in page
        assert "ACME MEDICAL" in page
        calm = client.get(f"/jobs/{inside_id}").text
        assert 'id="drift-flag"' not in calm
        assert "in distribution" in calm
        assert client.get(f"/api/jobs/{outside_id}").json()["details"]["drift"]["flagged"]

        # the heat map (on by default) is kept with the results and shown over the slice
        heat = client.get(f"/api/jobs/{inside_id}/heatmap.png")
        assert heat.status_code == 200
        assert heat.content.startswith(b"\x89PNG")
        assert Image.open(io.BytesIO(heat.content)).size[0] >= 512
        with ctx.sessions() as session:
            kept = session.get_one(Job, inside_id).details["heatmap"]
        assert Path(kept["file"]).is_file()
        assert kept["method"].startswith("Grad-CAM")
        assert 0.0 <= kept["share_in_liver"] <= 1.0
        assert 'id="heatmap"' in calm
        assert f"/api/jobs/{inside_id}/heatmap.png" in calm
        Path(kept["file"]).unlink()
        gone = client.get(f"/api/jobs/{inside_id}/heatmap.png")
        assert (gone.status_code, gone.json()["code"]) == (404, "file_missing")

        metrics = client.get("/metrics").text
        assert 'liver_agent_input_drift_checks_total{outcome="flagged"} 1.0' in metrics
        assert 'liver_agent_input_drift_checks_total{outcome="in_distribution"} 1.0' in metrics
        for check in ("manufacturer", "field_strength_t", "echo_time_ms"):
            assert f'liver_agent_input_drift_values_total{{check="{check}"}} 1.0' in metrics
        assert 'liver_agent_input_drift_values_total{check="matrix"}' not in metrics
    finally:
        ctx.ingestor.close()
        ctx.engine.dispose()
