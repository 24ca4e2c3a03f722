"""A failure reason belongs to the failure: a job that ends ``done`` after a retry, or after
its worker was lost and it ran again, shows no stale reason (the timeline keeps the history)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.context import AgentContext, open_context
from agent.jobs import lifecycle
from storage.models import Delivery, DeliveryStatus, Job, JobEvent, JobStatus, utcnow
from tests.agent.http_data import processed_job, queued_job, settings_for


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    context = open_context(settings_for(tmp_path))
    yield context
    context.engine.dispose()


def _reason(ctx: AgentContext, job_id: int) -> tuple[JobStatus, str | None, str | None]:
    with ctx.sessions() as session:
        job = session.get_one(Job, job_id)
        return job.status, job.reason_code, job.reason


def test_done_after_retry_of_a_dead_delivery_has_no_reason(ctx: AgentContext) -> None:
    job_id, _ = processed_job(ctx, status=JobStatus.DELIVERING, delivery=DeliveryStatus.DEAD)
    with ctx.sessions.begin() as session:
        assert lifecycle.settle_deliveries(session, job_id) == JobStatus.FAILED
    assert _reason(ctx, job_id)[1] == "delivery_dead"

    with ctx.sessions.begin() as session:
        lifecycle.retry(session, job_id)
    assert _reason(ctx, job_id) == (JobStatus.DELIVERING, None, None)

    with ctx.sessions.begin() as session:
        for delivery in session.scalars(select(Delivery).where(Delivery.job_id == job_id)):
            delivery.status = DeliveryStatus.DONE
        session.flush()
        assert lifecycle.settle_deliveries(session, job_id) == JobStatus.DONE
    assert _reason(ctx, job_id) == (JobStatus.DONE, None, None)
    with ctx.sessions() as session:  # the history is still on the timeline
        messages = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id))
        assert any("last retry" in m for m in messages)


def test_done_after_a_lost_worker_has_no_reason(ctx: AgentContext) -> None:
    job_id, _ = queued_job(ctx)
    with ctx.sessions.begin() as session:
        assert lifecycle.claim_next(session, worker="w1") is not None
    with ctx.sessions.begin() as session:
        later = utcnow() + dt.timedelta(seconds=1)
        assert lifecycle.requeue_stale(session, older_than=later) == [job_id]
    assert _reason(ctx, job_id)[:2] == (JobStatus.QUEUED, "worker_lost")

    with ctx.sessions.begin() as session:
        claimed = lifecycle.claim_next(session, worker="w2")
        assert claimed is not None
    assert _reason(ctx, job_id) == (JobStatus.RUNNING, None, None)
    with ctx.sessions.begin() as session:
        job = session.get_one(Job, job_id)
        lifecycle.record_result(session, job, evaluated=True, deliveries=0)
    assert _reason(ctx, job_id) == (JobStatus.DONE, None, None)


def test_not_evaluated_reason_survives_a_retried_delivery(ctx: AgentContext) -> None:
    job_id, _ = processed_job(ctx, status=JobStatus.DELIVERING, delivery=DeliveryStatus.DEAD)
    with ctx.sessions.begin() as session:  # as the worker records a "not evaluated" result
        job = session.get_one(Job, job_id)
        job.evaluated = False
        job.reason_code, job.reason = "no_t2_series", "no axial T2 series"
        job.details = {
            **(job.details or {}),
            "not_evaluated": {"reason_code": "no_t2_series", "reason": "no axial T2 series"},
        }
        assert lifecycle.settle_deliveries(session, job_id) == JobStatus.FAILED
    assert _reason(ctx, job_id)[1] == "delivery_dead"
    with ctx.sessions.begin() as session:
        lifecycle.retry(session, job_id)
        for delivery in session.scalars(select(Delivery).where(Delivery.job_id == job_id)):
            delivery.status = DeliveryStatus.DONE
        session.flush()
        assert lifecycle.settle_deliveries(session, job_id) == JobStatus.NOT_EVALUATED
    assert _reason(ctx, job_id) == (
        JobStatus.NOT_EVALUATED,
        "no_t2_series",
        "no axial T2 series",
    )
