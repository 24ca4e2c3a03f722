"""Queries of the radiologists' feedback (``feedback``, append-only): add, list, the verdict in
force per job (the newest row), and jobs by accession number for label imports."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Feedback, Job, Study


def add_feedback(
    session: Session,
    *,
    job_id: int,
    agree: bool,
    reference_positive: bool,
    user: str,
    source: str,
    wrong_slice: bool = False,
    wrong_outline: bool = False,
    comment: str | None = None,
) -> Feedback:
    """Append one verdict on the finding of job ``job_id``."""
    row = Feedback(
        job_id=job_id,
        agree=agree,
        reference_positive=reference_positive,
        wrong_slice=wrong_slice,
        wrong_outline=wrong_outline,
        comment=comment,
        user=user,
        source=source,
    )
    session.add(row)
    session.flush()
    return row


def feedback_of_job(session: Session, job_id: int) -> list[Feedback]:
    """Every verdict on one job, newest first."""
    return list(
        session.scalars(
            select(Feedback).where(Feedback.job_id == job_id).order_by(Feedback.id.desc())
        )
    )


def latest_feedback(session: Session, job_ids: list[int] | None = None) -> dict[int, Feedback]:
    """The verdict in force (the newest row) of each job that has one (of ``job_ids`` only)."""
    newest = select(func.max(Feedback.id)).group_by(Feedback.job_id)
    if job_ids is not None:
        newest = newest.where(Feedback.job_id.in_(job_ids))
    rows = session.scalars(select(Feedback).where(Feedback.id.in_(newest)))
    return {row.job_id: row for row in rows}


def newest_job_with_finding(session: Session, accession_number: str) -> Job | None:
    """The newest job with a finding (a label) among the studies with this accession number."""
    return session.scalars(
        select(Job)
        .join(Study, Study.id == Job.study_id)
        .where(Study.accession_number == accession_number, Job.label.is_not(None))
        .order_by(Job.id.desc())
        .limit(1)
    ).first()


def accession_known(session: Session, accession_number: str) -> bool:
    return (
        session.scalar(
            select(func.count(Study.id)).where(Study.accession_number == accession_number)
        )
        or 0
    ) > 0
