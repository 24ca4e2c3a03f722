"""The job queries the agent relies on, on a real SQLite file and a real PostgreSQL database
shared by several engines (as several worker processes would share it): claims, heartbeats,
stale jobs, deliveries."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage import jobs
from storage.models import (
    Delivery,
    DeliveryStatus,
    Job,
    JobEvent,
    JobStatus,
    OutputKind,
    Study,
    utcnow,
)

Connect = Callable[[], sessionmaker[Session]]


def add_jobs(
    sessions: sessionmaker[Session], count: int, status: JobStatus = JobStatus.QUEUED
) -> list[int]:
    with sessions.begin() as session:
        ids = []
        for _ in range(count):
            study = Study(
                study_instance_uid=generate_uid(),
                first_received_at=utcnow(),
                last_received_at=utcnow(),
            )
            session.add(study)
            session.flush()
            job = Job(study_id=study.id, version=1, status=status, created_at=utcnow())
            session.add(job)
            session.flush()
            ids.append(job.id)
        return ids


def test_claims_take_the_oldest_queued_job_and_record_the_worker(
    sessions: sessionmaker[Session],
) -> None:
    first, second = add_jobs(sessions, 2)
    with sessions.begin() as session:
        job = jobs.claim_next_job(session, worker="host:1:0")
        assert job is not None
        assert (job.id, job.status, job.worker, job.attempts) == (
            first,
            JobStatus.RUNNING,
            "host:1:0",
            1,
        )
        assert job.started_at is not None
        assert job.heartbeat_at is not None
        event = session.scalars(select(JobEvent).where(JobEvent.job_id == first)).one()
        assert event.data == {"from": "queued", "to": "running", "worker": "host:1:0"}
    with sessions.begin() as session:
        job = jobs.claim_next_job(session, worker="host:1:1")
        assert job is not None
        assert job.id == second
    with sessions.begin() as session:
        assert jobs.claim_next_job(session, worker="host:1:0") is None


def test_two_processes_racing_claim_each_job_exactly_once(connect: Connect) -> None:
    ids = add_jobs(connect(), 40)
    workers = [connect() for _ in range(4)]
    start = threading.Barrier(len(workers))

    def claim_all(n: int) -> list[int]:
        sessions = workers[n]
        start.wait()
        mine = []
        while True:
            with sessions.begin() as session:
                job = jobs.claim_next_job(session, worker=f"w{n}")
                if job is None:
                    return mine
                mine.append(job.id)

    with ThreadPoolExecutor(len(workers)) as pool:
        claimed = list(pool.map(claim_all, range(len(workers))))
    every = [job_id for mine in claimed for job_id in mine]
    assert sorted(every) == ids  # none twice, none left
    with workers[0]() as session:
        rows = session.execute(select(Job.id, Job.worker, Job.attempts)).all()
    owner = {job_id: f"w{n}" for n, mine in enumerate(claimed) for job_id in mine}
    assert all(worker == owner[job_id] and attempts == 1 for job_id, worker, attempts in rows)


def test_a_claim_waits_for_the_other_session_and_then_takes_the_next_job(
    connect: Connect, database: str
) -> None:
    a, b = connect(), connect()
    first, second = add_jobs(a, 2)
    got: list[int | None] = []
    with a.begin() as session_a:
        job = jobs.claim_next_job(session_a, worker="a")
        assert job is not None
        assert job.id == first

        def claim_b() -> None:
            with b.begin() as session_b:
                other = jobs.claim_next_job(session_b, worker="b")
                got.append(None if other is None else other.id)

        thread = threading.Thread(target=claim_b)
        thread.start()
        if database.startswith("sqlite"):
            thread.join(0.3)
            assert thread.is_alive()  # B waits on A's write transaction (BEGIN IMMEDIATE)
        else:  # PostgreSQL: B skips the row A holds (SKIP LOCKED) and takes the next at once
            thread.join(10)
            assert not thread.is_alive()
            assert got == [second]
    thread.join(10)
    assert got == [second]


def test_a_stopped_heartbeat_makes_a_running_job_stale(sessions: sessionmaker[Session]) -> None:
    beating, stopped = add_jobs(sessions, 2, JobStatus.RUNNING)
    long_ago = utcnow() - dt.timedelta(minutes=10)
    with sessions.begin() as session:
        for job_id in (beating, stopped):
            session.get_one(Job, job_id).heartbeat_at = long_ago
    with sessions.begin() as session:
        jobs.heartbeat(session, beating)
    cut = utcnow() - dt.timedelta(minutes=1)
    with sessions() as session:
        assert [j.id for j in jobs.stale_running_jobs(session, older_than=cut)] == [stopped]
        assert jobs.count_queued(session) == 0


def test_write_status_keeps_the_reason_and_stamps_final_states(
    sessions: sessionmaker[Session],
) -> None:
    (job_id,) = add_jobs(sessions, 1)
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        jobs.write_status(
            session, job, JobStatus.CANCELLED, reason_code="cancelled", reason="by an admin"
        )
    with sessions() as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.reason_code, job.reason) == (
            JobStatus.CANCELLED,
            "cancelled",
            "by an admin",
        )
        assert job.finished_at is not None
        assert jobs.claim_next_job(session, worker="w") is None  # a cancelled job is never claimed


def test_deliveries_are_claimed_once_and_released_after_a_crash(connect: Connect) -> None:
    a, b = connect(), connect()
    (job_id,) = add_jobs(a, 1, JobStatus.RUNNING)
    with a.begin() as session:
        seg = jobs.add_output(
            session,
            job_id,
            kind=OutputKind.SEG,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
            sop_instance_uid=generate_uid(),
            series_instance_uid=generate_uid(),
            path="/results/seg.dcm",
            size_bytes=10,
        )
        session.flush()
        delivery_id = jobs.add_delivery(session, job_id, "pacs", [seg]).id
    with a() as session:
        assert list(jobs.due_deliveries(session, now=utcnow())) == [delivery_id]
        assert jobs.seg_output_path(session, job_id) == "/results/seg.dcm"
        assert [i.output.kind for i in session.get_one(Delivery, delivery_id).items] == ["seg"]
    with a.begin() as session_a:
        assert jobs.claim_delivery(session_a, delivery_id) is True
    with b.begin() as session_b:
        assert jobs.claim_delivery(session_b, delivery_id) is False
    with b() as session:
        assert jobs.delivery_statuses(session, job_id) == {DeliveryStatus.SENDING}
        assert list(jobs.due_deliveries(session, now=utcnow())) == []
    with b.begin() as session:  # the sending process died: a restart puts it back
        assert jobs.release_sending_deliveries(session) == 1
    with b() as session:
        assert jobs.delivery_statuses(session, job_id) == {DeliveryStatus.PENDING}


def test_expired_outputs_are_those_of_jobs_finished_before_the_cut(
    sessions: sessionmaker[Session],
) -> None:
    old, recent, running = add_jobs(sessions, 3)
    now = utcnow()
    with sessions.begin() as session:
        for job_id, status, finished in (
            (old, JobStatus.DONE, now - dt.timedelta(days=3)),
            (recent, JobStatus.DONE, now),
            (running, JobStatus.RUNNING, None),
        ):
            job = session.get_one(Job, job_id)
            job.status, job.finished_at = status, finished
            jobs.add_output(
                session,
                job_id,
                kind=OutputKind.SR,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
                sop_instance_uid=generate_uid(),
                series_instance_uid=generate_uid(),
                path=f"/results/{job_id}.dcm",
                size_bytes=1,
            )
    with sessions() as session:
        expired = jobs.expired_outputs(session, finished_before=now - dt.timedelta(days=1))
        assert [o.job_id for o in expired] == [old]
