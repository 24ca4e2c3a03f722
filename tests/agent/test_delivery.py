"""Worker outputs, deliveries to a real DCMTK storescp, retries, dead letters, retention."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import select, update

from agent.context import AgentContext, open_context
from agent.delivery import Deliverer
from agent.jobs import lifecycle
from agent.model_provider import ModelProvider
from agent.retention import clean_results
from agent.settings import Settings, load_settings
from agent.worker import Worker
from storage.models import Delivery, DeliveryStatus, Job, JobStatus, Output, utcnow
from tests.agent.http_data import complete, ingest
from tests.integration.processes import STORESCP, dcmtk_env, free_port, wait_for_port
from tests.pipeline.outputs.synthetic_mr import make_mr_series, make_not_evaluated, make_result


def _settings(tmp_path: Path, port: int, **extra: Any) -> Settings:
    return load_settings(
        None,
        database={"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        spool={"path": tmp_path / "spool", "min_free_mb": 0},
        results={"path": tmp_path / "results", "retention_days": 1},
        destinations=[
            {
                "name": "pacs",
                "ae_title": "DEST",
                "host": "127.0.0.1",
                "port": port,
                "send": {"seg": True, "sr": True, "sc": True},
            },
        ],
        delivery={"retry_seconds": [0.0, 0.0], "poll_seconds": 0.1},
        **extra,
    )


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def ctx(tmp_path: Path, port: int) -> Iterator[AgentContext]:
    context = open_context(_settings(tmp_path, port))
    yield context
    context.ingestor.close()
    context.engine.dispose()


class StoreSCP:
    """A DCMTK storescp that keeps every received object in ``folder``."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [STORESCP, "-aet", "DEST", "-od", str(self.folder), str(self.port)],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, 20, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())


def _job_with_result(ctx: AgentContext, evaluated: bool = True) -> int:
    """Ingest a small series as from PACS 'DEST', complete it, claim it, and publish a result
    for it through the worker (the pipeline itself is tested elsewhere)."""
    series = make_mr_series(12, 64, 64)
    for ds in series:
        ds.StudyInstanceUID = series[0].StudyInstanceUID
    ingest(ctx, series)
    job_id = complete(ctx, str(series[0].StudyInstanceUID))
    with ctx.sessions.begin() as session:
        session.get_one(Job, job_id).study.source_ae = "DEST"
    with ctx.sessions.begin() as session:
        claimed = lifecycle.claim_next(session, worker="test")
    assert claimed is not None
    assert claimed.job_id == job_id
    result = (
        make_result(series)
        if evaluated
        else make_not_evaluated(series, "no_axial_t2", "no axial T2-weighted series")
    )
    worker = Worker(
        ctx.settings,
        ctx.sessions,
        ctx.spool,
        ModelProvider(ctx.settings.model),
        ctx.metrics,
        threading.Event(),
        name="test",
    )
    worker.publish(claimed, result)
    return job_id


def _job(ctx: AgentContext, job_id: int) -> Job:
    with ctx.sessions() as session:
        job = session.get_one(Job, job_id)
        _ = job.deliveries, job.outputs, job.events
        for d in job.deliveries:
            _ = d.items
        return job


def test_worker_records_outputs_and_one_delivery_per_destination(ctx: AgentContext) -> None:
    job_id = _job_with_result(ctx)
    job = _job(ctx, job_id)
    assert job.status == JobStatus.DELIVERING
    assert job.evaluated is True
    assert sorted(o.kind for o in job.outputs) == ["sc", "seg", "sr"]
    assert all(Path(o.path).exists() for o in job.outputs if o.path)
    (delivery,) = job.deliveries
    assert delivery.destination == "pacs"
    assert len(delivery.items) == 3


@pytest.mark.integration  # starts DCMTK storescp
def test_delivery_retries_while_destination_is_down_then_sends_once(
    ctx: AgentContext, tmp_path: Path, port: int
) -> None:
    job_id = _job_with_result(ctx)
    deliverer = Deliverer(ctx.settings, ctx.sessions, ctx.metrics)
    assert deliverer.deliver_due() == 1  # destination down
    job = _job(ctx, job_id)
    (delivery,) = job.deliveries
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.attempts == 1
    assert "did not accept an association" in (delivery.last_error or "")
    assert job.status == JobStatus.DELIVERING

    scp = StoreSCP(tmp_path / "received", port)
    scp.start()
    try:
        assert deliverer.deliver_due() == 1
        job = _job(ctx, job_id)
        assert job.status == JobStatus.DONE
        (delivery,) = job.deliveries
        assert delivery.status == DeliveryStatus.DONE
        assert all(item.sent_at is not None for item in delivery.items)
        received = scp.received()
        assert {str(dcmread(p).SOPInstanceUID) for p in received} == {
            o.sop_instance_uid for o in job.outputs
        }
        # nothing is sent twice after success
        assert deliverer.deliver_due() == 0
        assert len(scp.received()) == len(received)
    finally:
        scp.stop()
    assert ctx.metrics.delivery_failures.labels("pacs")._value.get() == 1


@pytest.mark.integration  # starts DCMTK storescp
def test_dead_after_the_last_retry_and_manual_retry_sends_again(
    ctx: AgentContext, tmp_path: Path, port: int
) -> None:
    job_id = _job_with_result(ctx)
    deliverer = Deliverer(ctx.settings, ctx.sessions, ctx.metrics)
    for _ in range(3):  # retry_seconds has two entries: the third failure is the last
        deliverer.deliver_due()
    job = _job(ctx, job_id)
    assert job.deliveries[0].status == DeliveryStatus.DEAD
    assert job.status == JobStatus.FAILED
    assert job.reason_code == "delivery_dead"
    assert deliverer.deliver_due() == 0  # dead letters are not retried by themselves

    with ctx.sessions.begin() as session:
        assert "re-queued" in lifecycle.retry(session, job_id)
    scp = StoreSCP(tmp_path / "received", port)
    scp.start()
    try:
        assert deliverer.deliver_due() == 1
    finally:
        scp.stop()
    job = _job(ctx, job_id)
    assert job.status == JobStatus.DONE
    assert len(scp.received()) == 3


@pytest.mark.integration  # starts DCMTK storescp
def test_not_evaluated_job_sends_its_sr_and_ends_not_evaluated(
    ctx: AgentContext, tmp_path: Path, port: int
) -> None:
    job_id = _job_with_result(ctx, evaluated=False)
    job = _job(ctx, job_id)
    assert [o.kind for o in job.outputs] == ["not_evaluated_sr"]
    scp = StoreSCP(tmp_path / "received", port)
    scp.start()
    try:
        Deliverer(ctx.settings, ctx.sessions, ctx.metrics).deliver_due()
    finally:
        scp.stop()
    job = _job(ctx, job_id)
    assert job.status == JobStatus.NOT_EVALUATED
    assert job.reason_code == "no_axial_t2"
    (received,) = scp.received()
    assert "NOT EVALUATED" in str(dcmread(received).SeriesDescription)


def test_retention_removes_files_of_finished_jobs_only_after_the_period(
    ctx: AgentContext,
) -> None:
    delivering = _job_with_result(ctx)
    finished = _job_with_result(ctx)
    with ctx.sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == finished)
            .values(status=JobStatus.DONE, finished_at=utcnow() - dt.timedelta(days=2))
        )
        session.execute(
            update(Delivery).where(Delivery.job_id == finished).values(status=DeliveryStatus.DONE)
        )
    assert clean_results(ctx.sessions, retention_days=1) == 3
    with ctx.sessions() as session:
        kept = session.scalars(select(Output).where(Output.job_id == delivering)).all()
        gone = session.scalars(select(Output).where(Output.job_id == finished)).all()
    assert all(o.path and Path(o.path).exists() for o in kept)
    assert all(o.path is None for o in gone)
