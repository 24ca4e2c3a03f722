"""Queries over jobs and what hangs off them: status writes, claims, heartbeats, timeline
events, stage timings, outputs and deliveries.

Every function takes an open :class:`~sqlalchemy.orm.Session` and leaves committing to the
caller, so one caller decides what is atomic. Which status change is allowed is decided by
``agent.jobs.lifecycle``, not here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from storage.models import (
    Delivery,
    DeliveryItem,
    DeliveryStatus,
    EventKind,
    Job,
    JobEvent,
    JobStage,
    JobStatus,
    Output,
    OutputKind,
    Study,
    utcnow,
)


def add_event(
    session: Session,
    job_id: int,
    kind: EventKind,
    message: str,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data))


def result_reason(job: Job) -> tuple[str | None, str | None]:
    """Why the pipeline did not evaluate the job (code, sentence), kept in its details; None
    for an evaluated job or one without a result."""
    if job.evaluated is not False:
        return None, None
    kept = (job.details or {}).get("not_evaluated") or {}
    if not isinstance(kept, dict):
        return None, None
    code, text = kept.get("reason_code"), kept.get("reason")
    return (str(code) if code else None), (str(text) if text else None)


def write_status(
    session: Session,
    job: Job,
    status: JobStatus,
    *,
    reason_code: str | None = None,
    reason: str | None = None,
) -> None:
    """Write a job's new status (with its reason) and log it on the timeline.

    Only :mod:`agent.jobs.lifecycle` calls this, after checking that the change is allowed.
    The reason shown is the new status's: given, it replaces the old one. Not given, a job that
    moves on drops the reason of an earlier failure (``delivery_dead``, ``worker_lost``; the
    timeline keeps it): queued and running have none, and delivering, done and not_evaluated
    show the pipeline's "not evaluated" reason if the result has one.
    """
    old = job.status
    job.status = status
    if reason_code is not None or reason is not None:
        job.reason_code = reason_code
        job.reason = reason
    elif status in (JobStatus.QUEUED, JobStatus.RUNNING):
        job.reason_code = job.reason = None
    elif status in (JobStatus.DELIVERING, JobStatus.DONE, JobStatus.NOT_EVALUATED):
        job.reason_code, job.reason = result_reason(job)
    if status.is_final:
        job.finished_at = utcnow()
    message = f"{old} -> {status}" + (f": {reason}" if reason else "")
    add_event(
        session,
        job.id,
        EventKind.STATUS,
        message,
        {"from": str(old), "to": str(status), "reason_code": reason_code},
    )


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def claim_next_job(session: Session, *, worker: str) -> Job | None:
    """Atomically move the oldest queued job to ``running`` for this worker.

    On PostgreSQL the oldest queued row not locked by another claimer is locked with
    ``SELECT ... FOR UPDATE SKIP LOCKED``: workers on several machines never wait for each
    other and never take the same job. On SQLite one UPDATE guarded by ``status = 'queued'``
    decides the winner (writers are serialised by ``BEGIN IMMEDIATE``), so two workers
    (threads or processes) never claim the same job either.
    """
    now = utcnow()
    skip_locked = _is_postgresql(session)
    for _ in range(5):
        query = select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.id).limit(1)
        if skip_locked:
            query = query.with_for_update(skip_locked=True)
        candidate = session.scalar(query)
        if candidate is None:
            return None
        won = session.execute(
            update(Job)
            .where(Job.id == candidate, Job.status == JobStatus.QUEUED)
            .values(
                status=JobStatus.RUNNING,
                worker=worker,
                started_at=now,
                heartbeat_at=now,
                attempts=Job.attempts + 1,
                reason_code=None,  # a reason for re-queueing is history now (timeline)
                reason=None,
            )
        )
        if getattr(won, "rowcount", 0):
            job = session.get_one(Job, candidate, populate_existing=True)
            add_event(
                session,
                job.id,
                EventKind.STATUS,
                f"queued -> running (worker {worker})",
                {"from": "queued", "to": "running", "worker": worker},
            )
            return job
    return None


def heartbeat(session: Session, job_id: int) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow()))


def stale_running_jobs(session: Session, *, older_than: dt.datetime) -> Sequence[Job]:
    """Running jobs whose last heartbeat is older than ``older_than`` (or missing)."""
    return session.scalars(
        select(Job)
        .where(
            Job.status == JobStatus.RUNNING,
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < older_than),
        )
        .order_by(Job.id)
    ).all()


def record_stage(session: Session, job_id: int, stage: str, seconds: float) -> None:
    session.add(JobStage(job_id=job_id, stage=stage, seconds=seconds))


def list_jobs(
    session: Session,
    *,
    status: JobStatus | None = None,
    study_instance_uid: str | None = None,
    accession_number: str | None = None,
    created_from: dt.datetime | None = None,
    created_to: dt.datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[Sequence[Job], int]:
    """Jobs, newest first, with the total count matching the filters."""
    query = select(Job).join(Study, Study.id == Job.study_id)
    if status is not None:
        query = query.where(Job.status == status)
    if study_instance_uid:
        query = query.where(Study.study_instance_uid == study_instance_uid)
    if accession_number:
        query = query.where(Study.accession_number == accession_number)
    if created_from is not None:
        query = query.where(Job.created_at >= created_from)
    if created_to is not None:
        query = query.where(Job.created_at < created_to)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    jobs = session.scalars(query.order_by(Job.id.desc()).limit(limit).offset(offset)).all()
    return jobs, int(total)


def count_jobs_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {str(s): int(n) for s, n in rows}


def count_queued(session: Session) -> int:
    return int(session.scalar(select(func.count()).where(Job.status == JobStatus.QUEUED)) or 0)


def next_version_id(session: Session, job_id: int) -> int | None:
    """The id of the job that replaced this one (its next version), if any."""
    return session.scalar(select(Job.id).where(Job.previous_job_id == job_id))


# --- outputs and deliveries ---------------------------------------------------------------


def add_output(
    session: Session,
    job_id: int,
    *,
    kind: OutputKind,
    sop_class_uid: str,
    sop_instance_uid: str,
    series_instance_uid: str,
    path: str,
    size_bytes: int,
) -> Output:
    """Record a result object written for the job."""
    row = Output(
        job_id=job_id,
        kind=kind,
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        series_instance_uid=series_instance_uid,
        path=path,
        size_bytes=size_bytes,
    )
    session.add(row)
    return row


def add_delivery(
    session: Session, job_id: int, destination: str, outputs: Sequence[Output]
) -> Delivery:
    """One delivery of ``outputs`` (flushed rows) to a destination, due now."""
    delivery = Delivery(job_id=job_id, destination=destination, next_attempt_at=utcnow())
    session.add(delivery)
    session.flush()
    session.add_all(DeliveryItem(delivery_id=delivery.id, output_id=o.id) for o in outputs)
    return delivery


def due_deliveries(session: Session, *, now: dt.datetime) -> Sequence[int]:
    """Ids of pending deliveries whose next attempt time has come, oldest first."""
    return session.scalars(
        select(Delivery.id)
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at)
    ).all()


def due_deliveries_by_destination(
    session: Session, *, now: dt.datetime
) -> Sequence[tuple[int, str]]:
    """(id, destination name) of pending deliveries whose next attempt time has come, oldest
    first."""
    rows = session.execute(
        select(Delivery.id, Delivery.destination)
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at)
    ).all()
    return [(int(row[0]), str(row[1])) for row in rows]


def claim_delivery(session: Session, delivery_id: int, *, claimed_by: str | None = None) -> bool:
    """Move a pending delivery to ``sending``; False when another sender had it first."""
    won = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.SENDING, claimed_by=claimed_by, claimed_at=utcnow())
    )
    return bool(getattr(won, "rowcount", 0))


def claim_due_deliveries(
    session: Session, *, now: dt.datetime, claimed_by: str, limit: int = 100
) -> list[tuple[int, str]]:
    """Claim pending deliveries whose next attempt time has come (pending -> sending), oldest
    first; return their (id, destination name).

    On PostgreSQL the due rows are locked with ``FOR UPDATE SKIP LOCKED``, so agents scanning
    at the same moment split them instead of queueing behind each other; on SQLite each row is
    taken by an UPDATE guarded by its status. Either way a delivery is claimed once.
    """
    query = (
        select(Delivery.id, Delivery.destination)
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
    )
    if _is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    claimed: list[tuple[int, str]] = []
    for delivery_id, destination in session.execute(query).all():
        if claim_delivery(session, int(delivery_id), claimed_by=claimed_by):
            claimed.append((int(delivery_id), str(destination)))
    return claimed


def refresh_delivery_claims(session: Session, delivery_ids: Sequence[int]) -> None:
    """The sender is still at it: its claims on these deliveries are fresh again."""
    if delivery_ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(delivery_ids), Delivery.status == DeliveryStatus.SENDING)
            .values(claimed_at=utcnow())
        )


def refresh_delivery_claims_of(session: Session, claimed_by: str) -> None:
    """Every delivery ``claimed_by`` is sending (or has queued to send) is fresh again."""
    session.execute(
        update(Delivery)
        .where(Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_by == claimed_by)
        .values(claimed_at=utcnow())
    )


def release_sending_deliveries(
    session: Session, *, claimed_before: dt.datetime | None = None
) -> int:
    """Deliveries left in ``sending`` go back to pending, due now.

    ``claimed_before`` None: every one (one agent owns the database and is starting: no one
    else is sending). Given: only those whose claim is older (their sender stopped refreshing
    it: it died), as an agent sharing the database with others does.
    """
    query = update(Delivery).where(Delivery.status == DeliveryStatus.SENDING)
    if claimed_before is not None:
        stale = or_(Delivery.claimed_at.is_(None), Delivery.claimed_at < claimed_before)
        query = query.where(stale)
    result = session.execute(
        query.values(
            status=DeliveryStatus.PENDING,
            next_attempt_at=utcnow(),
            claimed_by=None,
            claimed_at=None,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def deliveries_of(session: Session, job_id: int) -> Sequence[Delivery]:
    return session.scalars(
        select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.id)
    ).all()


def delivery_statuses(session: Session, job_id: int) -> set[DeliveryStatus]:
    return set(session.scalars(select(Delivery.status).where(Delivery.job_id == job_id)).all())


def expired_outputs(session: Session, *, finished_before: dt.datetime) -> Sequence[Output]:
    """Outputs with a file, of jobs in a final state that finished before the cut-off."""
    final = [s for s in JobStatus if s.is_final]
    return session.scalars(
        select(Output)
        .join(Job, Job.id == Output.job_id)
        .where(Job.status.in_(final), Job.finished_at < finished_before, Output.path.is_not(None))
    ).all()


def seg_output_path(session: Session, job_id: int) -> str | None:
    """Path of the job's first SEG output that still has a file."""
    return session.scalar(
        select(Output.path)
        .where(Output.job_id == job_id, Output.kind == OutputKind.SEG, Output.path.is_not(None))
        .order_by(Output.id)
        .limit(1)
    )


def newer_version(session: Session, job_id: int) -> int | None:
    """The id of the newest job of the same study with a higher version, or None."""
    job = session.get_one(Job, job_id)
    return session.scalar(
        select(Job.id)
        .where(Job.study_id == job.study_id, Job.version > job.version)
        .order_by(Job.version.desc())
        .limit(1)
    )


def delivered_earlier_version(
    session: Session, job_id: int
) -> tuple[Job, Output | None, dt.datetime | None] | None:
    """The newest earlier version of this job's study whose results reached a destination
    (some object sent), with the SR among them that was sent (TID 1500 or "not evaluated";
    None when no SR went out) and when; None when no earlier version was delivered."""
    job = session.get_one(Job, job_id)
    sent = (
        select(Job, Output, DeliveryItem.sent_at)
        .join(Delivery, Delivery.job_id == Job.id)
        .join(DeliveryItem, DeliveryItem.delivery_id == Delivery.id)
        .join(Output, Output.id == DeliveryItem.output_id)
        .where(
            Job.study_id == job.study_id,
            Job.version < job.version,
            DeliveryItem.sent_at.is_not(None),
        )
        .order_by(Job.version.desc(), DeliveryItem.sent_at.desc())
    )
    rows = session.execute(sent).all()
    if not rows:
        return None
    newest = rows[0][0]
    srs = [
        (output, at)
        for found, output, at in rows
        if found.id == newest.id and output.kind in (OutputKind.SR, OutputKind.NOT_EVALUATED_SR)
    ]
    if not srs:
        return newest, None, None
    return newest, srs[0][0], srs[0][1]
