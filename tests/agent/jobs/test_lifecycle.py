"""The job lifecycle: every allowed and every refused transition, on a real SQLite file, and
the named actions the edges call (claim, requeue, record result, fail, settle, supersede,
retry, cancel)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from agent.jobs import lifecycle
from agent.jobs.lifecycle import ALLOWED, JobAction, JobNotFoundError, JobTransitionError
from storage import jobs
from storage.db import make_engine, make_sessionmaker, upgrade
from storage.models import (
    Delivery,
    DeliveryStatus,
    EventKind,
    Job,
    JobEvent,
    JobStatus,
    Study,
    utcnow,
)

ROOT = Path(__file__).resolve().parents[3]
S = JobStatus


def _open(folder: Path) -> Engine:
    engine = make_engine(f"sqlite:///{folder / 'jobs.sqlite'}")
    upgrade(engine)
    return engine


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    """One database for the 392 table cases (each on its own job row)."""
    engine = _open(tmp_path_factory.mktemp("db"))
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = _open(tmp_path)
    yield make_sessionmaker(engine)
    engine.dispose()


def new_job(session: Session, status: JobStatus, *, evaluated: bool | None = None) -> Job:
    study = Study(
        study_instance_uid=generate_uid(),
        first_received_at=utcnow(),
        last_received_at=utcnow(),
    )
    session.add(study)
    session.flush()
    job = Job(study_id=study.id, version=1, status=status, created_at=utcnow(), evaluated=evaluated)
    session.add(job)
    session.flush()
    return job


def test_the_table_is_the_design() -> None:
    """DESIGN.md job states, written out once more by hand."""
    finished = (S.FAILED, S.CANCELLED, S.DONE, S.NOT_EVALUATED)
    expected = {
        (JobAction.CLAIM, S.QUEUED, S.RUNNING),
        (JobAction.REQUEUE, S.RUNNING, S.QUEUED),
        (JobAction.RECORD_RESULT, S.RUNNING, S.DELIVERING),
        (JobAction.RECORD_RESULT, S.RUNNING, S.DONE),
        (JobAction.RECORD_RESULT, S.RUNNING, S.NOT_EVALUATED),
        (JobAction.FAIL, S.RUNNING, S.FAILED),
        (JobAction.FAIL, S.DELIVERING, S.FAILED),
        (JobAction.SETTLE, S.DELIVERING, S.DONE),
        (JobAction.SETTLE, S.DELIVERING, S.NOT_EVALUATED),
        (JobAction.CANCEL, S.QUEUED, S.CANCELLED),
        (JobAction.CANCEL, S.RUNNING, S.CANCELLED),
        (JobAction.CANCEL, S.DELIVERING, S.CANCELLED),
        (JobAction.SUPERSEDE, S.QUEUED, S.CANCELLED),
        (JobAction.SUPERSEDE, S.DELIVERING, S.CANCELLED),  # a newer version before delivery
        *((JobAction.RETRY, s, S.QUEUED) for s in finished),
        *((JobAction.RETRY, s, S.DELIVERING) for s in (*finished, S.DELIVERING)),
    }
    assert expected == ALLOWED
    assert not any(current.is_final and not to.is_final for _, current, to in ALLOWED
                   if _ is not JobAction.RETRY)  # fmt: skip


@pytest.mark.parametrize(
    ("action", "current", "to"), list(itertools.product(JobAction, JobStatus, JobStatus))
)
def test_every_transition_is_allowed_or_refused_by_the_table(
    shared: sessionmaker[Session], action: JobAction, current: JobStatus, to: JobStatus
) -> None:
    with shared.begin() as session:
        job = new_job(session, current)
        if (action, current, to) in ALLOWED:
            assert lifecycle.apply(session, job, action, to, reason_code="x", reason="y") == to
            assert job.status == to
            assert (job.finished_at is not None) == to.is_final
            event = session.scalars(
                select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.kind == EventKind.STATUS)
            ).one()
            assert event.data == {"from": str(current), "to": str(to), "reason_code": "x"}
        else:
            with pytest.raises(JobTransitionError) as refused:
                lifecycle.apply(session, job, action, to)
            assert refused.value.code == "transition_refused"
            assert job.status == current
            assert not session.scalars(select(JobEvent).where(JobEvent.job_id == job.id)).all()


def test_only_the_lifecycle_writes_a_job_status() -> None:
    writers = sorted(
        str(path.relative_to(ROOT))
        for package in ("agent", "storage")
        for path in (ROOT / package).rglob("*.py")
        if re.search(r"\bwrite_status\(|\.status = JobStatus\.", path.read_text(encoding="utf-8"))
    )
    assert writers == ["agent/jobs/lifecycle.py", "storage/jobs.py"]


def test_claim_then_requeue_after_the_heartbeat_stopped(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        job_id = new_job(session, S.QUEUED).id
    with sessions.begin() as session:
        claimed = lifecycle.claim_next(session, worker="w1")
    assert claimed is not None
    assert claimed.job_id == job_id
    with sessions.begin() as session:
        assert lifecycle.claim_next(session, worker="w2") is None
        assert lifecycle.requeue_stale(session, older_than=utcnow()) == [job_id]
        job = session.get_one(Job, job_id)
        assert (job.status, job.reason_code) == (S.QUEUED, "worker_lost")


def test_record_result_and_settle(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        sent = new_job(session, S.RUNNING, evaluated=True)
        kept = new_job(session, S.RUNNING, evaluated=False)
        assert lifecycle.record_result(session, sent, evaluated=True, deliveries=1) == S.DELIVERING
        assert lifecycle.record_result(session, kept, evaluated=False, deliveries=0) == (
            S.NOT_EVALUATED
        )
        delivery = Delivery(job_id=sent.id, destination="pacs", status=DeliveryStatus.PENDING)
        session.add(delivery)
        session.flush()
        assert lifecycle.settle_deliveries(session, sent.id) is None
        delivery.status = DeliveryStatus.DONE
        assert lifecycle.settle_deliveries(session, sent.id) == S.DONE


def test_a_dead_delivery_fails_the_job(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        job = new_job(session, S.DELIVERING, evaluated=True)
        session.add(Delivery(job_id=job.id, destination="pacs", status=DeliveryStatus.DEAD))
        session.flush()
        assert lifecycle.settle_deliveries(session, job.id) == S.FAILED
        assert job.reason_code == "delivery_dead"


def test_a_late_result_or_error_is_discarded(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        job = new_job(session, S.CANCELLED)
        assert lifecycle.still_running(session, job) is False
        assert lifecycle.fail(session, job, "boom", "late error") is None
        assert job.status == S.CANCELLED
        kinds = session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job.id)).all()
        assert kinds == [EventKind.DISCARDED, EventKind.DISCARDED]


def test_supersede_cancels_only_a_queued_version(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        queued, running, newer = (new_job(session, s) for s in (S.QUEUED, S.RUNNING, S.QUEUED))
        assert lifecycle.supersede(session, queued, by=newer) is True
        assert (queued.status, queued.reason_code) == (S.CANCELLED, "superseded")
        assert lifecycle.supersede(session, running, by=newer) is False
        assert running.status == S.RUNNING


@pytest.mark.parametrize("current", list(JobStatus))
def test_admin_actions_refuse_what_they_cannot_do(
    sessions: sessionmaker[Session], current: JobStatus
) -> None:
    with sessions.begin() as session:
        job_id = new_job(session, current).id
    with sessions.begin() as session:
        if current in (S.QUEUED, S.RUNNING):
            with pytest.raises(JobTransitionError) as err:
                lifecycle.perform(session, job_id, JobAction.RETRY)
            assert err.value.code == "not_retryable"
        elif current == S.DELIVERING:  # no dead delivery and none done: still under way
            session.add(Delivery(job_id=job_id, destination="pacs"))
            session.flush()
            with pytest.raises(JobTransitionError):
                lifecycle.perform(session, job_id, JobAction.RETRY)
        else:
            outcome = lifecycle.perform(session, job_id, JobAction.RETRY)
            assert (outcome.status, outcome.message) == (S.QUEUED, "job re-queued")
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        if job.status.is_final:
            with pytest.raises(JobTransitionError) as err:
                lifecycle.perform(session, job_id, JobAction.CANCEL)
            assert err.value.code == "not_cancellable"
        else:
            assert lifecycle.perform(session, job_id, JobAction.CANCEL).status == S.CANCELLED
            assert all(
                d.status == DeliveryStatus.CANCELLED for d in jobs.deliveries_of(session, job_id)
            )


def test_perform_knows_only_admin_actions_and_existing_jobs(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        with pytest.raises(JobNotFoundError):
            lifecycle.perform(session, 10**9, JobAction.CANCEL)
        job_id = new_job(session, S.QUEUED).id
        with pytest.raises(JobTransitionError) as err:
            lifecycle.perform(session, job_id, JobAction.CLAIM)
        assert err.value.code == "not_an_admin_action"


@pytest.mark.parametrize("status", list(JobStatus))
def test_the_web_page_offers_what_the_table_allows(status: JobStatus) -> None:
    offered = lifecycle.admin_actions_for(status)
    assert (JobAction.RETRY in offered) == (status not in (S.QUEUED, S.RUNNING))
    assert (JobAction.CANCEL in offered) == (not status.is_final)
