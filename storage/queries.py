"""Queries over the models: associations, ingest rows, studies and their completion.

Every function takes an open :class:`~sqlalchemy.orm.Session` and leaves committing to the
caller, so one caller decides what is atomic.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Exists, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from storage.jobs import add_event
from storage.locks import wait_transaction_lock
from storage.models import (
    Association,
    AssociationStatus,
    CohortStudy,
    EventKind,
    IngestProtocol,
    Instance,
    Job,
    JobEvent,
    JobStatus,
    Series,
    Study,
    StudyAssociation,
    StudyStatus,
    utcnow,
)


@dataclass(frozen=True)
class InstanceRecord:
    """What the database keeps of one received instance (no patient identifiers)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: str
    size_bytes: int
    accession_number: str | None = None
    study_date: str | None = None
    study_description: str | None = None
    modality: str | None = None
    series_number: int | None = None
    series_description: str | None = None


class SeriesInOtherStudyError(ValueError):
    """An instance names a Series Instance UID that the database holds under another study.

    A series belongs to exactly one study (PS3.3 C.7.3.1: the Series Instance UID identifies
    it uniquely), so the instance is refused rather than filed under either study.
    """

    def __init__(self, series_instance_uid: str, study_instance_uid: str) -> None:
        self.series_instance_uid = series_instance_uid
        self.study_instance_uid = study_instance_uid
        super().__init__(
            f"series {series_instance_uid} belongs to another study than {study_instance_uid}"
        )


# --- associations -------------------------------------------------------------------------


def open_association(
    session: Session,
    *,
    calling_ae: str,
    called_ae: str,
    peer_host: str,
    protocol: IngestProtocol = IngestProtocol.DIMSE,
) -> int:
    assoc = Association(
        calling_ae=calling_ae, called_ae=called_ae, peer_host=peer_host, protocol=protocol
    )
    session.add(assoc)
    session.flush()
    return assoc.id


def close_association(session: Session, association_id: int, status: AssociationStatus) -> None:
    session.execute(
        update(Association)
        .where(Association.id == association_id, Association.status == AssociationStatus.OPEN)
        .values(status=status, ended_at=utcnow())
    )


def abort_open_associations(session: Session) -> int:
    """At start: associations left open by a previous process are over (aborted)."""
    result = session.execute(
        update(Association)
        .where(Association.status == AssociationStatus.OPEN)
        .values(status=AssociationStatus.ABORTED, ended_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- ingest -------------------------------------------------------------------------------


_INSTANCE_FILE = select(Instance.path, Instance.size_bytes).where(
    Instance.sop_instance_uid == bindparam("uid")
)


def instance_file(session: Session, sop_instance_uid: str) -> tuple[str, int] | None:
    """Spool-relative path and size of a recorded instance, or None."""
    row = session.execute(_INSTANCE_FILE, {"uid": sop_instance_uid}).first()
    return None if row is None else (row[0], int(row[1]))


_SERIES_STUDY = (
    select(Study.study_instance_uid)
    .join(Series, Series.study_id == Study.id)
    .where(Series.series_instance_uid == bindparam("uid"))
)


def study_of_series(session: Session, series_instance_uid: str) -> str | None:
    """The Study Instance UID a recorded series belongs to, or None if it is unknown."""
    return session.scalar(_SERIES_STUDY, {"uid": series_instance_uid})


def known_files_and_series(
    session: Session, sop_instance_uids: list[str], series_instance_uids: list[str]
) -> tuple[dict[str, tuple[str, int]], dict[str, str]]:
    """For a batch: the path and size of each of these instances that is recorded, and the
    study of each of these series that is recorded (two queries instead of two per instance)."""
    files = {
        row[0]: (row[1], int(row[2]))
        for row in session.execute(
            select(Instance.sop_instance_uid, Instance.path, Instance.size_bytes).where(
                Instance.sop_instance_uid.in_(set(sop_instance_uids))
            )
        )
    }
    owners = {
        row[0]: row[1]
        for row in session.execute(
            select(Series.series_instance_uid, Study.study_instance_uid)
            .join(Study, Series.study_id == Study.id)
            .where(Series.series_instance_uid.in_(set(series_instance_uids)))
        )
    }
    return files, owners


def instance_exists(session: Session, sop_instance_uid: str) -> bool:
    return (
        session.scalar(select(exists().where(Instance.sop_instance_uid == sop_instance_uid)))
        is True
    )


# record_instance runs once per received instance before the sender gets its answer: its
# statements are built once, so that each call only binds values (building and hashing
# SQLAlchemy statements cost more than SQLite executing them).
_STUDY_ID = select(Study.id).where(Study.study_instance_uid == bindparam("uid"))
_NEW_STUDY = (
    insert(Study)
    .values(
        study_instance_uid=bindparam("uid"),
        accession_number=bindparam("accession_number"),
        study_date=bindparam("study_date"),
        study_description=bindparam("study_description"),
        first_received_at=bindparam("now"),
        last_received_at=bindparam("now"),
    )
    .returning(Study.id)
)
_SERIES = select(Series.id, Series.study_id).where(Series.series_instance_uid == bindparam("uid"))
_NEW_SERIES = (
    insert(Series)
    .values(
        study_id=bindparam("study_id"),
        series_instance_uid=bindparam("uid"),
        modality=bindparam("modality"),
        series_number=bindparam("series_number"),
        series_description=bindparam("series_description"),
    )
    .returning(Series.id)
)
_NEW_INSTANCE = insert(Instance).values(
    series_id=bindparam("series_id"),
    sop_instance_uid=bindparam("sop_instance_uid"),
    sop_class_uid=bindparam("sop_class_uid"),
    transfer_syntax_uid=bindparam("transfer_syntax_uid"),
    path=bindparam("path"),
    size_bytes=bindparam("size_bytes"),
    association_id=bindparam("association_id"),
    received_at=bindparam("now"),
)
# counts go up by the instances recorded at once ("n")
_STUDY_RECEIVED = (
    update(Study)
    .where(Study.id == bindparam("study_id"))
    .values(
        last_received_at=bindparam("now"),
        status=StudyStatus.RECEIVING,
        instance_count=Study.instance_count + bindparam("n"),
        source_ae=func.coalesce(bindparam("source_ae"), Study.source_ae),
    )
)
_SERIES_RECEIVED = (
    update(Series)
    .where(Series.id == bindparam("series_id"))
    .values(instance_count=Series.instance_count + bindparam("n"))
)
_ASSOCIATION_RECEIVED = (
    update(Association)
    .where(Association.id == bindparam("association_id"))
    .values(instances_received=Association.instances_received + bindparam("n"))
)
_LINKED = select(
    exists().where(
        StudyAssociation.study_id == bindparam("study_id"),
        StudyAssociation.association_id == bindparam("association_id"),
    )
)
_LINK = insert(StudyAssociation).values(
    study_id=bindparam("study_id"), association_id=bindparam("association_id")
)


def lock_studies(session: Session, study_instance_uids: Iterable[str]) -> None:
    """On a server database, wait for each study's lock (until the transaction ends), in
    study order: receivers sharing the database record a study's rows one at a time, and
    taking locks in one order never deadlocks. Taking a held lock again is free."""
    if session.get_bind().dialect.name == "sqlite":
        return  # SQLite serialises writers already
    for uid in sorted(set(study_instance_uids)):
        wait_transaction_lock(session.connection(), f"study:{uid}")


def record_instance(
    session: Session,
    record: InstanceRecord,
    *,
    association_id: int | None,
    source_ae: str | None,
) -> None:
    """Insert the instance, creating or updating its study and series rows.

    A study that was complete goes back to ``receiving``: when it completes again a new job
    version is made. On PostgreSQL, receivers recording instances of one study at once take
    turns (a transaction advisory lock on the Study Instance UID), so the study and series rows
    are made once. Raises ``IntegrityError`` if the SOP Instance UID exists already, and
    :class:`SeriesInOtherStudyError` if the series is recorded under another study.
    """
    record_instances(session, [record], association_id=association_id, source_ae=source_ae)


def record_instances(
    session: Session,
    records: list[InstanceRecord],
    *,
    association_id: int | None,
    source_ae: str | None,
) -> None:
    """:func:`record_instance` for many instances at once: per study and per series one
    lookup and one count update, the instances in one multi-row insert (a received folder of
    one series takes a handful of statements instead of six per instance).

    All or nothing: raises ``IntegrityError`` if any SOP Instance UID exists already (or comes
    twice), :class:`SeriesInOtherStudyError` if any series is recorded under another study;
    run it in a savepoint and fall back to :func:`record_instance` one by one to tell which.
    """
    now = utcnow()
    by_study: dict[str, list[InstanceRecord]] = {}
    for record in records:
        by_study.setdefault(record.study_instance_uid, []).append(record)
    lock_studies(session, by_study)
    for study_uid in sorted(by_study):
        group = by_study[study_uid]
        first = group[0]
        study_id = session.scalar(_STUDY_ID, {"uid": study_uid})
        if study_id is None:
            study_id = session.scalar(
                _NEW_STUDY,
                {
                    "uid": study_uid,
                    "accession_number": first.accession_number,
                    "study_date": first.study_date,
                    "study_description": first.study_description,
                    "now": now,
                },
            )
        series_ids: dict[str, int] = {}
        counts: dict[int, int] = {}
        rows = []
        for record in group:
            uid = record.series_instance_uid
            if uid not in series_ids:
                series_row = session.execute(_SERIES, {"uid": uid}).first()
                if series_row is None:
                    series_ids[uid] = session.execute(
                        _NEW_SERIES,
                        {
                            "study_id": study_id,
                            "uid": uid,
                            "modality": record.modality,
                            "series_number": record.series_number,
                            "series_description": record.series_description,
                        },
                    ).scalar_one()
                elif series_row.study_id != study_id:
                    raise SeriesInOtherStudyError(uid, study_uid)
                else:
                    series_ids[uid] = series_row.id
            series_id = series_ids[uid]
            counts[series_id] = counts.get(series_id, 0) + 1
            rows.append(
                {
                    "series_id": series_id,
                    "sop_instance_uid": record.sop_instance_uid,
                    "sop_class_uid": record.sop_class_uid,
                    "transfer_syntax_uid": record.transfer_syntax_uid,
                    "path": record.path,
                    "size_bytes": record.size_bytes,
                    "association_id": association_id,
                    "now": now,
                }
            )
        session.execute(_NEW_INSTANCE, rows)
        session.execute(
            _STUDY_RECEIVED,
            {"study_id": study_id, "now": now, "source_ae": source_ae or None, "n": len(group)},
        )
        for series_id, n in counts.items():
            session.execute(_SERIES_RECEIVED, {"series_id": series_id, "n": n})
        if association_id is not None:
            session.execute(
                _ASSOCIATION_RECEIVED, {"association_id": association_id, "n": len(group)}
            )
            link = {"study_id": study_id, "association_id": association_id}
            if not session.scalar(_LINKED, link):
                session.execute(_LINK, link)


def study_id_of(session: Session, study_instance_uid: str) -> int | None:
    return session.scalar(select(Study.id).where(Study.study_instance_uid == study_instance_uid))


# --- completion ---------------------------------------------------------------------------


def _in_cohort() -> Exists:
    """The study (``Study`` of the enclosing query) belongs to a site cohort."""
    return (
        select(CohortStudy.id)
        .where(CohortStudy.study_instance_uid == Study.study_instance_uid)
        .exists()
    )


def studies_ready(
    session: Session,
    *,
    now: dt.datetime,
    quiet_seconds: float,
    stable_seconds: float,
    watching_since: dt.datetime | None = None,
) -> Sequence[int]:
    """Ids of receiving studies that meet the completion rule (DESIGN.md, data flow 2).

    Complete when nothing arrived for ``quiet_seconds``, no association that brought instances
    of the study is still open and the latest of them was released (an aborted one means the
    sender may send again: more may come); or when nothing arrived for ``stable_seconds`` while
    the agent was watching (``watching_since``, its start: after a restart the sender gets the
    whole ``stable_seconds`` to resend, however old the last instance is).
    """
    open_assoc = (
        select(StudyAssociation.id)
        .join(Association, Association.id == StudyAssociation.association_id)
        .where(
            StudyAssociation.study_id == Study.id,
            Association.status == AssociationStatus.OPEN,
        )
        .exists()
    )
    latest_assoc = (
        select(Association.status)
        .join(StudyAssociation, StudyAssociation.association_id == Association.id)
        .where(StudyAssociation.study_id == Study.id)
        .order_by(Association.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    quiet_before = now - dt.timedelta(seconds=quiet_seconds)
    stable_before = now - dt.timedelta(seconds=stable_seconds)
    quiet = (
        (Study.last_received_at <= quiet_before)
        & ~open_assoc
        & or_(latest_assoc.is_(None), latest_assoc == AssociationStatus.RELEASED)
    )
    # a cohort's studies are retrieved for research and never become jobs (nothing sent)
    in_cohort = _in_cohort()
    watched_long_enough = watching_since is None or watching_since <= stable_before
    rules = [quiet, Study.last_received_at <= stable_before] if watched_long_enough else [quiet]
    return session.scalars(
        select(Study.id)
        .where(Study.status == StudyStatus.RECEIVING)
        .where(~in_cohort)
        .where(or_(*rules))
        .order_by(Study.last_received_at)
    ).all()


def mark_study_complete(session: Session, study_id: int) -> bool:
    """Mark a receiving study complete; False when it was no longer receiving (another
    completer won)."""
    won = session.execute(
        update(Study)
        .where(Study.id == study_id, Study.status == StudyStatus.RECEIVING)
        .values(status=StudyStatus.COMPLETE, completed_at=utcnow())
    )
    return bool(getattr(won, "rowcount", 0))


def complete_study(session: Session, study_id: int, *, rule: str) -> Job | None:
    """Mark the study complete and queue a new job version for it.

    The new job links to the previous version (``Job.previous``); whether that version is
    cancelled is the job lifecycle's decision (``agent.jobs.lifecycle.supersede``). Returns
    None when the study was no longer receiving (another completer won).
    """
    now = utcnow()
    if not mark_study_complete(session, study_id):
        return None
    study = session.get_one(Study, study_id)
    previous = session.scalar(
        select(Job).where(Job.study_id == study_id).order_by(Job.version.desc()).limit(1)
    )
    job = Job(
        study_id=study_id,
        version=1 if previous is None else previous.version + 1,
        previous_job_id=None if previous is None else previous.id,
        status=JobStatus.QUEUED,
        instance_count=study.instance_count,
        created_at=now,
    )
    session.add(job)
    session.flush()
    if previous is None:
        add_event(
            session,
            job.id,
            EventKind.QUEUED,
            f"study complete ({rule}) with {study.instance_count} instances",
            {"rule": rule},
        )
    else:
        add_event(
            session,
            job.id,
            EventKind.QUEUED,
            f"study complete again ({rule}) with {study.instance_count} instances; "
            f"new version {job.version} of job {previous.id}",
            {"rule": rule, "previous_job_id": previous.id},
        )
        add_event(
            session,
            previous.id,
            EventKind.SUPERSEDED,
            f"more instances arrived; job {job.id} (version {job.version}) replaces this one",
            {"next_job_id": job.id},
        )
    return job


def count_studies(session: Session) -> int:
    return int(session.scalar(select(func.count(Study.id))) or 0)


def series_count(session: Session, study_id: int) -> int:
    return int(
        session.scalar(select(func.count()).select_from(Series).where(Series.study_id == study_id))
        or 0
    )


def latest_job_id(session: Session, study_id: int) -> int | None:
    """The newest job version of the study, if any."""
    return session.scalar(select(func.max(Job.id)).where(Job.study_id == study_id))


def lock_study(session: Session, study_id: int) -> Study:
    """The study row, held for this transaction (``FOR UPDATE`` on PostgreSQL; SQLite's
    write lock is held from ``BEGIN IMMEDIATE`` already)."""
    return session.scalars(select(Study).where(Study.id == study_id).with_for_update()).one()


def study_instance_files(session: Session, study_id: int) -> list[tuple[int, str, int]]:
    """(instance id, spool-relative path, size) of every recorded instance of the study."""
    rows = session.execute(
        select(Instance.id, Instance.path, Instance.size_bytes)
        .join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == study_id)
    ).all()
    return [(int(i), str(p), int(n)) for i, p, n in rows]


def forget_instances(session: Session, study_id: int, instance_ids: Sequence[int]) -> None:
    """Drop instance rows whose files were deleted; the study and its series count zero."""
    session.execute(delete(Instance).where(Instance.id.in_(list(instance_ids))))
    session.execute(update(Series).where(Series.study_id == study_id).values(instance_count=0))
    session.execute(update(Study).where(Study.id == study_id).values(instance_count=0))


def spool_bytes(session: Session) -> int:
    """Bytes of every recorded instance in the spool."""
    return int(session.scalar(select(func.coalesce(func.sum(Instance.size_bytes), 0))) or 0)


def list_studies(session: Session, *, limit: int = 100, offset: int = 0) -> Sequence[Study]:
    return session.scalars(
        select(Study).order_by(Study.last_received_at.desc()).limit(limit).offset(offset)
    ).all()


def instance_paths(
    session: Session, study_id: int, *, up_to_instance_id: int | None = None
) -> list[str]:
    """Spool-relative paths of every instance of the study; with ``up_to_instance_id``, only
    those recorded up to that row (the snapshot a T2-first job runs on)."""
    query = (
        select(Instance.path)
        .join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == study_id)
        .order_by(Instance.id)
    )
    if up_to_instance_id is not None:
        query = query.where(Instance.id <= up_to_instance_id)
    return list(session.scalars(query).all())


# --- T2-first: series-level completion ---------------------------------------------------


@dataclass(frozen=True)
class SeriesArrival:
    """How far one series of a receiving study has arrived."""

    series_id: int
    series_instance_uid: str
    instance_count: int
    last_received_at: dt.datetime
    max_instance_id: int


def receiving_studies_without_job(session: Session) -> Sequence[int]:
    """Ids of studies still receiving that have no job yet (T2-first candidates); a cohort's
    studies never become jobs."""
    has_job = select(Job.id).where(Job.study_id == Study.id).exists()
    return session.scalars(
        select(Study.id)
        .where(Study.status == StudyStatus.RECEIVING, ~has_job, ~_in_cohort())
        .order_by(Study.id)
    ).all()


def series_arrivals(session: Session, study_id: int) -> list[SeriesArrival]:
    """Per series of the study: instances recorded, the latest arrival, the newest row id."""
    rows = session.execute(
        select(
            Series.id,
            Series.series_instance_uid,
            func.count(Instance.id),
            func.max(Instance.received_at),
            func.max(Instance.id),
        )
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.study_id == study_id)
        .group_by(Series.id, Series.series_instance_uid)
        .order_by(Series.id)
    ).all()
    return [
        SeriesArrival(int(sid), str(uid), int(n), last, int(top)) for sid, uid, n, last, top in rows
    ]


def series_instance_paths(session: Session, series_id: int) -> list[str]:
    """Spool-relative paths of every instance of one series."""
    return list(
        session.scalars(
            select(Instance.path).where(Instance.series_id == series_id).order_by(Instance.id)
        ).all()
    )


def queue_t2_first_job(
    session: Session, study_id: int, *, snapshot: dict[str, Any], message: str
) -> Job | None:
    """Queue version 1 of a job for a study that is still receiving, on the instances recorded
    so far (``snapshot["max_instance_id"]``), because its axial T2 series is complete. None
    when the study stopped receiving or got a job meanwhile (another check won)."""
    study = lock_study(session, study_id)
    if study.status != StudyStatus.RECEIVING or latest_job_id(session, study_id) is not None:
        return None
    job = Job(
        study_id=study_id,
        version=1,
        status=JobStatus.QUEUED,
        instance_count=int(snapshot["instance_count_study"]),
        created_at=utcnow(),
        details={"t2_first": snapshot},
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, EventKind.QUEUED, message, {"t2_first": snapshot})
    return job


def spool_usage(session: Session) -> tuple[int, int]:
    """Received instances the spool holds: (files, bytes), as recorded."""
    row = session.execute(
        select(func.count(Instance.id), func.coalesce(func.sum(Instance.size_bytes), 0))
    ).one()
    return int(row[0]), int(row[1])


def studies_past_retention(session: Session, *, cutoff: dt.datetime) -> Sequence[int]:
    """Studies whose received instances may be deleted: complete (no association open, nothing
    arriving), nothing received since ``cutoff``, every job final and finished before
    ``cutoff``, and some instance still recorded."""
    unfinished = (
        select(Job.id)
        .where(
            Job.study_id == Study.id,
            or_(
                ~Job.status.in_(_FINAL_STATUSES),
                Job.finished_at.is_(None),
                Job.finished_at >= cutoff,
            ),
        )
        .exists()
    )
    has_job = select(Job.id).where(Job.study_id == Study.id).exists()
    has_instance = (
        select(Instance.id)
        .join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == Study.id)
        .exists()
    )
    return session.scalars(
        select(Study.id).where(
            Study.status == StudyStatus.COMPLETE,
            Study.last_received_at < cutoff,
            has_job,
            ~unfinished,
            has_instance,
        )
    ).all()


_FINAL_STATUSES = [s for s in JobStatus if s.is_final]


def study_images_deleted(session: Session, study_id: int) -> bool:
    """Whether retention deleted the study's received images and none came again since."""
    deleted = session.scalar(
        select(JobEvent.id)
        .join(Job, Job.id == JobEvent.job_id)
        .where(Job.study_id == study_id, JobEvent.kind == EventKind.SPOOL_DELETED)
        .limit(1)
    )
    if deleted is None:
        return False
    found = session.scalar(
        select(Instance.id)
        .join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == study_id)
        .limit(1)
    )
    return found is None
