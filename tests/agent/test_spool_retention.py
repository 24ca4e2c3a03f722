"""Received images leave the spool once their study's jobs are final and the retention has
passed, never while a job needs them; ``/metrics`` and ``/readyz`` say what the spool holds.
Real files in a real spool, a real SQLite database."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from agent.context import AgentContext, open_context
from agent.http.app import create_app
from agent.jobs import lifecycle
from agent.jobs.lifecycle import JobTransitionError
from agent.retention import clean_spool
from storage.models import Instance, Job, JobEvent, JobStatus, Study, StudyStatus, utcnow
from tests.agent.http_data import AUTH, processed_job, settings_for

DAY = dt.timedelta(days=1)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    context = open_context(settings_for(tmp_path))
    yield context
    context.ingestor.close()
    context.engine.dispose()


def _age(ctx: AgentContext, job_id: int, ago: dt.timedelta, status: JobStatus) -> str:
    """Make a job's study and files look ``ago`` old, with the job in ``status``."""
    then = utcnow() - ago
    with ctx.sessions.begin() as session:
        job = session.get_one(Job, job_id)
        job.status = status
        job.finished_at = then if status.is_final else None
        study = session.get_one(Study, job.study_id)
        study.last_received_at = then
        uid = study.study_instance_uid
    for path in (ctx.spool.root / uid).rglob("*.dcm"):
        os.utime(path, (then.timestamp(), then.timestamp()))
    return uid


def _files(ctx: AgentContext, study_uid: str) -> list[Path]:
    return sorted((ctx.spool.root / study_uid).rglob("*.dcm"))


def _rows(ctx: AgentContext) -> int:
    with ctx.sessions() as session:
        return int(session.scalar(select(func.count(Instance.id))) or 0)


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


@pytest.mark.parametrize(
    "status", [JobStatus.DONE, JobStatus.NOT_EVALUATED, JobStatus.FAILED, JobStatus.CANCELLED]
)
def test_final_study_past_retention_is_deleted(ctx: AgentContext, status: JobStatus) -> None:
    job_id, datasets = processed_job(ctx)
    kept_id, _ = processed_job(ctx)
    old = _age(ctx, job_id, 2 * DAY, status)
    young = _age(ctx, kept_id, dt.timedelta(hours=2), JobStatus.DONE)
    n = len(_files(ctx, old))  # the T2 series and a localizer
    assert n > len(datasets)
    client = TestClient(create_app(ctx), headers=AUTH)
    before = client.get("/metrics").text
    assert _metric(before, "liver_agent_spool_files") == 2 * n

    done = clean_spool(ctx.sessions, ctx.spool, 1.0)

    assert (done.studies, done.files) == (1, n)
    assert done.bytes > 0
    assert _files(ctx, old) == []
    assert not (ctx.spool.root / old).exists(), "empty study folder left"
    assert len(_files(ctx, young)) == n
    assert _rows(ctx) == n
    after = client.get("/metrics").text
    assert _metric(after, "liver_agent_spool_files") == n
    assert (
        _metric(after, "liver_agent_spool_bytes")
        == _metric(before, "liver_agent_spool_bytes") - done.bytes
    )
    spool_check = next(c for c in client.get("/readyz").json()["checks"] if c["name"] == "spool")
    assert f"{n} files" in spool_check["detail"]
    with ctx.sessions() as session:
        kinds = session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job_id)).all()
        assert "spool_deleted" in kinds
        assert session.get_one(Job, job_id).status == status  # the job and its result stay

    # the study sent again is stored again (not taken for a duplicate) in a re-created folder
    buffer = BytesIO()
    datasets[0].save_as(buffer, enforce_file_format=True)
    received = ctx.ingestor.store(buffer.getvalue(), association_id=None, source_ae="PACS")
    assert not received.duplicate
    assert len(_files(ctx, old)) == 1


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DELIVERING])
def test_kept_while_a_job_needs_the_images(ctx: AgentContext, status: JobStatus) -> None:
    job_id, _datasets = processed_job(ctx)
    uid = _age(ctx, job_id, 10 * DAY, status)
    n = len(_files(ctx, uid))
    assert clean_spool(ctx.sessions, ctx.spool, 1.0).files == 0
    assert len(_files(ctx, uid)) == n


def test_kept_while_any_version_of_the_job_is_unfinished(ctx: AgentContext) -> None:
    job_id, _datasets = processed_job(ctx)
    uid = _age(ctx, job_id, 10 * DAY, JobStatus.DONE)
    with ctx.sessions.begin() as session:
        old = session.get_one(Job, job_id)
        session.add(
            Job(study_id=old.study_id, version=2, previous_job_id=job_id, status=JobStatus.QUEUED)
        )
    n = len(_files(ctx, uid))
    assert clean_spool(ctx.sessions, ctx.spool, 1.0).files == 0
    assert len(_files(ctx, uid)) == n


def test_kept_within_the_retention_or_while_the_study_is_open(ctx: AgentContext) -> None:
    recent_id, _ = processed_job(ctx)
    recent = _age(ctx, recent_id, dt.timedelta(hours=23), JobStatus.DONE)
    open_id, _ = processed_job(ctx)
    still_open = _age(ctx, open_id, 10 * DAY, JobStatus.DONE)
    with ctx.sessions.begin() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == still_open)).one()
        study.status = StudyStatus.RECEIVING
    assert clean_spool(ctx.sessions, ctx.spool, 1.0).files == 0
    assert _files(ctx, recent)
    assert _files(ctx, still_open)


def test_a_file_written_after_the_cutoff_is_kept(ctx: AgentContext) -> None:
    job_id, _datasets = processed_job(ctx)
    uid = _age(ctx, job_id, 2 * DAY, JobStatus.DONE)
    files = _files(ctx, uid)
    fresh = files[0]
    os.utime(fresh)  # e.g. the same instance being written again right now
    done = clean_spool(ctx.sessions, ctx.spool, 1.0)
    assert done.files == len(files) - 1
    assert _files(ctx, uid) == [fresh]


def test_a_job_whose_images_are_gone_cannot_run_again(ctx: AgentContext) -> None:
    job_id, _ = processed_job(ctx)
    _age(ctx, job_id, 2 * DAY, JobStatus.FAILED)
    assert clean_spool(ctx.sessions, ctx.spool, 1.0).studies == 1
    with ctx.sessions.begin() as session, pytest.raises(JobTransitionError) as caught:
        lifecycle.retry(session, job_id)
    assert caught.value.code == "images_deleted"
    with ctx.sessions() as session:
        assert session.get_one(Job, job_id).status == JobStatus.FAILED
