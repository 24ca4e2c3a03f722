"""The admin API: job filters and paging, detail, retry, cancel, preview, studies, readiness
and metrics, against a temporary SQLite database made through the real ingest path."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from agent.context import AgentContext, open_context
from agent.errors import ModelUnavailableError
from agent.http.app import create_app
from agent.jobs.preview import OUTLINE_RGB
from storage.models import Delivery, DeliveryStatus, Job, JobStatus
from tests.agent.http_data import AUTH, processed_job, queued_job, settings_for


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    context = open_context(settings_for(tmp_path))
    yield context
    context.engine.dispose()


@pytest.fixture
def client(ctx: AgentContext) -> TestClient:
    return TestClient(create_app(ctx), headers=AUTH)


def _ids(client: TestClient, **params: object) -> tuple[list[int], int]:
    response = client.get("/api/jobs", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return [j["id"] for j in body["jobs"]], body["total"]


def test_filters_and_paging_return_the_right_jobs(client: TestClient, ctx: AgentContext) -> None:
    day = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
    a, study_a = queued_job(ctx, accession="ACC-A", created_at=day)
    b, _ = queued_job(ctx, accession="ACC-B", created_at=day + dt.timedelta(days=1))
    c, _ = queued_job(ctx, accession="ACC-B", created_at=day + dt.timedelta(days=2, hours=3))
    with ctx.sessions.begin() as session:
        session.get_one(Job, b).status = JobStatus.FAILED

    assert _ids(client) == ([c, b, a], 3)
    assert _ids(client, status="failed") == ([b], 1)
    assert _ids(client, status="queued") == ([c, a], 2)
    assert _ids(client, accession_number="ACC-B") == ([c, b], 2)
    assert _ids(client, study_instance_uid=study_a) == ([a], 1)
    # a date alone covers its whole day; upper bound inclusive of that day
    assert _ids(client, created_from="2026-11-21") == ([c, b], 2)
    assert _ids(client, created_to="2026-11-21") == ([b, a], 2)
    assert _ids(client, created_from="2026-11-21", created_to="2026-11-21") == ([b], 1)
    assert _ids(client, created_from="2026-11-22T13:00:00Z") == ([], 0)
    assert _ids(client, created_from="2026-11-22T13:30:00+02:00") == ([c], 1)  # 11:30 UTC
    # paging: total counts every match
    assert _ids(client, limit=2) == ([c, b], 3)
    assert _ids(client, limit=2, offset=2) == ([a], 3)
    assert _ids(client, limit=2, offset=4) == ([], 3)


@pytest.mark.parametrize(
    "params",
    [
        {"status": "finished"},
        {"created_from": "yesterday"},
        {"created_from": "2026-11-22", "created_to": "2026-11-20"},
        {"limit": 0},
        {"offset": -1},
    ],
)
def test_bad_filters_are_422(client: TestClient, params: dict[str, object]) -> None:
    response = client.get("/api/jobs", params=params)
    assert response.status_code == 422


def test_job_detail_has_study_selection_result_timings_events_outputs(
    client: TestClient, ctx: AgentContext
) -> None:
    job_id, datasets = processed_job(
        ctx, status=JobStatus.DELIVERING, delivery=DeliveryStatus.PENDING
    )
    body = client.get(f"/api/jobs/{job_id}").json()
    assert body["id"] == job_id
    assert body["status"] == "delivering"
    assert body["study"]["study_instance_uid"] == str(datasets[0].StudyInstanceUID)
    assert body["study"]["series_count"] == 2
    assert {s["series_instance_uid"] for s in body["series"]} >= {
        str(datasets[0].SeriesInstanceUID)
    }
    candidates = body["details"]["selection"]["candidates"]
    chosen = [c for c in candidates if c["series_instance_uid"] == body["series_instance_uid"]]
    assert chosen
    assert chosen[0]["eligible"] is True
    assert body["slice_sop_instance_uid"] == str(datasets[3].SOPInstanceUID)
    assert body["probability"] == pytest.approx(0.83)
    assert body["label"] == "cirrhosis"
    assert body["liver_area_mm2"] == pytest.approx(15234.0)
    assert body["model_demo"] is True
    assert [s["stage"] for s in body["stages"]] == ["select", "load", "segment", "classify"]
    assert any(e["kind"] == "result" for e in body["events"])
    assert body["outputs"][0]["kind"] == "seg"
    assert body["outputs"][0]["available"] is True
    assert body["deliveries"][0]["status"] == "pending"


def test_unknown_job_is_404(client: TestClient) -> None:
    for path in ("/api/jobs/999", "/api/jobs/999/preview.png"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["code"] == "job_not_found"
    for action in ("retry", "cancel"):
        assert client.post(f"/api/jobs/999/{action}").status_code == 404


def test_retry_requeues_a_dead_delivery(client: TestClient, ctx: AgentContext) -> None:
    job_id, _ = processed_job(ctx, status=JobStatus.FAILED, delivery=DeliveryStatus.DEAD)
    response = client.post(f"/api/jobs/{job_id}/retry")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "delivering"
    assert "pacs" in response.json()["message"]
    with ctx.sessions() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.job_id == job_id)).one()
        assert delivery.status == DeliveryStatus.PENDING
        assert delivery.attempts == 0
        assert delivery.next_attempt_at is not None
        assert session.get_one(Job, job_id).status == JobStatus.DELIVERING
    detail = client.get(f"/api/jobs/{job_id}").json()
    assert detail["events"][-1]["kind"] == "retry"


def test_retry_of_a_failed_job_without_deliveries_queues_it(
    client: TestClient, ctx: AgentContext
) -> None:
    job_id, _ = queued_job(ctx)
    with ctx.sessions.begin() as session:
        session.get_one(Job, job_id).status = JobStatus.FAILED
    ctx.wake_workers.clear()
    response = client.post(f"/api/jobs/{job_id}/retry")
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert ctx.wake_workers.is_set()


def test_retry_and_cancel_conflicts_are_409_with_a_reason(
    client: TestClient, ctx: AgentContext
) -> None:
    queued, _ = queued_job(ctx)
    response = client.post(f"/api/jobs/{queued}/retry")
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"job {queued} is queued: nothing to retry",
        "code": "not_retryable",
    }
    done, _ = processed_job(ctx, status=JobStatus.DONE)
    response = client.post(f"/api/jobs/{done}/cancel")
    assert response.status_code == 409
    assert response.json()["code"] == "not_cancellable"
    assert "already done" in response.json()["detail"]


def test_cancel_stops_a_job_and_its_pending_deliveries(
    client: TestClient, ctx: AgentContext
) -> None:
    job_id, _ = processed_job(ctx, status=JobStatus.DELIVERING, delivery=DeliveryStatus.PENDING)
    response = client.post(f"/api/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    with ctx.sessions() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.job_id == job_id)).one()
        assert delivery.status == DeliveryStatus.CANCELLED
        job = session.get_one(Job, job_id)
        assert job.status == JobStatus.CANCELLED
        assert job.finished_at is not None


def test_preview_is_the_chosen_slice_with_the_liver_outline(
    client: TestClient, ctx: AgentContext
) -> None:
    job_id, _ = processed_job(ctx)
    response = client.get(f"/api/jobs/{job_id}/preview.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-liver-outline"] == "drawn"
    image = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert image.shape == (512, 512, 3)  # 64 x 64 slice scaled by 8
    outline = np.all(image == OUTLINE_RGB, axis=-1)
    assert 500 < outline.sum() < 20000  # a contour, not a filled area
    # the outline lies on the phantom's liver: upper left of the image
    ys, xs = np.nonzero(outline)
    assert ys.mean() < 300
    assert xs.mean() < 260
    gray = image[~outline].mean(axis=-1)
    assert gray.min() < 20
    assert gray.max() > 235


def test_preview_without_seg_file_has_no_outline(client: TestClient, ctx: AgentContext) -> None:
    job_id, _ = processed_job(ctx)
    with ctx.sessions() as session:
        seg_path = Path(session.get_one(Job, job_id).outputs[0].path or "")
    seg_path.unlink()
    response = client.get(f"/api/jobs/{job_id}/preview.png")
    assert response.status_code == 200
    assert response.headers["x-liver-outline"] == "missing"
    image = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert not np.all(image == OUTLINE_RGB, axis=-1).any()


def test_preview_of_a_job_without_result_is_404_with_reason(
    client: TestClient, ctx: AgentContext
) -> None:
    job_id, _ = queued_job(ctx)
    response = client.get(f"/api/jobs/{job_id}/preview.png")
    assert response.status_code == 404
    assert response.json()["code"] == "no_result"
    assert "no result slice" in response.json()["detail"]


def test_studies_list(client: TestClient, ctx: AgentContext) -> None:
    _, first = queued_job(ctx, accession="ACC-1")
    _, second = queued_job(ctx, accession="ACC-2")
    body = client.get("/api/studies").json()
    assert body["total"] == 2
    assert [s["study_instance_uid"] for s in body["studies"]] == [second, first]
    assert body["studies"][0]["latest_job_id"] is not None
    page = client.get("/api/studies", params={"limit": 1, "offset": 1}).json()
    assert [s["study_instance_uid"] for s in page["studies"]] == [first]


def test_readyz_passes_then_fails_when_the_spool_is_short(tmp_path: Path) -> None:
    ready = open_context(settings_for(tmp_path / "a"))
    short = open_context(settings_for(tmp_path / "b", spool={"min_free_mb": 2**40}))
    try:
        ok = TestClient(create_app(ready), headers=AUTH).get("/readyz")
        assert ok.status_code == 200
        assert ok.json()["ready"] is True
        response = TestClient(create_app(short), headers=AUTH).get("/readyz")
        assert response.status_code == 503
        checks = {c["name"]: c for c in response.json()["checks"]}
        assert checks["spool"]["ok"] is False
        assert "minimum" in checks["spool"]["detail"]
        assert checks["database"]["ok"] is True
    finally:
        ready.engine.dispose()
        short.engine.dispose()


def test_readyz_fails_when_the_models_cannot_load(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        worker={"threads": 1},
        model={
            "segmentation": tmp_path / "missing-seg",
            "classification": tmp_path / "missing-cls",
        },
    )
    ctx = open_context(settings)
    try:
        client = TestClient(create_app(ctx), headers=AUTH)
        loading = client.get("/readyz")
        assert loading.status_code == 503  # not started: not ready
        with pytest.raises(ModelUnavailableError):
            ctx.models.get(timeout=60)
        response = client.get("/readyz")
        assert response.status_code == 503
        models = next(c for c in response.json()["checks"] if c["name"] == "models")
        assert models["ok"] is False
        assert "missing-seg" in models["detail"]
    finally:
        ctx.engine.dispose()
