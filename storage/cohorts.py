"""Queries of site cohorts (``cohorts``, ``cohort_studies``): what was asked for, what was
retrieved, and each study's status and reason."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Cohort, CohortStudy, CohortStudyStatus, Series, Study, utcnow


def get_cohort(session: Session, name: str) -> Cohort | None:
    return session.scalar(select(Cohort).where(Cohort.name == name))


def get_or_create_cohort(
    session: Session, name: str, *, source: str, query: dict[str, Any] | None
) -> Cohort:
    """The cohort called ``name``, created with ``source`` and ``query`` if new."""
    cohort = get_cohort(session, name)
    if cohort is None:
        cohort = Cohort(name=name, source=source, query=query)
        session.add(cohort)
        session.flush()
    return cohort


def list_cohorts(session: Session) -> list[tuple[Cohort, dict[str, int]]]:
    """Every cohort with its study count per status."""
    out = []
    for cohort in session.scalars(select(Cohort).order_by(Cohort.id)):
        counts = dict(
            session.execute(
                select(CohortStudy.status, func.count(CohortStudy.id))
                .where(CohortStudy.cohort_id == cohort.id)
                .group_by(CohortStudy.status)
            )
            .tuples()
            .all()
        )
        out.append((cohort, {str(k): int(v) for k, v in counts.items()}))
    return out


def add_requested(
    session: Session,
    cohort: Cohort,
    requested: str,
    *,
    study_instance_uid: str | None = None,
    accession_number: str | None = None,
) -> CohortStudy:
    """The row for ``requested`` (``accession:X`` / ``study:UID``), created pending if new."""
    row = session.scalar(
        select(CohortStudy).where(
            CohortStudy.cohort_id == cohort.id, CohortStudy.requested == requested
        )
    )
    if row is None:
        row = CohortStudy(
            cohort_id=cohort.id,
            requested=requested,
            study_instance_uid=study_instance_uid,
            accession_number=accession_number,
            status=CohortStudyStatus.PENDING,
        )
        session.add(row)
        session.flush()
    return row


def cohort_studies(
    session: Session, cohort: Cohort, statuses: list[CohortStudyStatus] | None = None
) -> list[CohortStudy]:
    query = select(CohortStudy).where(CohortStudy.cohort_id == cohort.id)
    if statuses is not None:
        query = query.where(CohortStudy.status.in_(statuses))
    return list(session.scalars(query.order_by(CohortStudy.id)))


def set_status(
    session: Session,
    row_id: int,
    status: CohortStudyStatus,
    *,
    reason_code: str | None = None,
    reason: str | None = None,
    **values: Any,
) -> CohortStudy:
    """Record a study's new status with its reason (None clears an old one) and other values."""
    row = session.get_one(CohortStudy, row_id)
    row.status = status
    row.reason_code = reason_code
    row.reason = reason
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    session.flush()
    return row


def stored_series(session: Session, study_instance_uid: str) -> dict[str, int]:
    """Series Instance UID -> instances the spool holds, for one study."""
    rows = session.execute(
        select(Series.series_instance_uid, Series.instance_count)
        .join(Study, Study.id == Series.study_id)
        .where(Study.study_instance_uid == study_instance_uid)
    ).all()
    return {str(uid): int(n) for uid, n in rows}


def study_row_id(session: Session, study_instance_uid: str) -> int | None:
    return session.scalar(select(Study.id).where(Study.study_instance_uid == study_instance_uid))
