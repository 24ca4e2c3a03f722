"""Queries of the monitoring (``agent.monitoring``): the few columns of each job created since a
time, and the verdict in force of each of those jobs; no ORM objects and no ``IN`` lists, so a
report over tens of thousands of jobs stays cheap."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Feedback, Job


@dataclass(frozen=True)
class MonitoredJob:
    """What monitoring reads of a job (``drift``: ``details["drift"]`` as stored, None when
    absent; its shape is checked by the reader)."""

    id: int
    study_id: int
    created_at: dt.datetime
    evaluated: bool | None
    label: str | None
    probability: float | None
    reason_code: str | None
    model_name: str | None
    model_version: str | None
    drift: Any


def monitored_jobs(session: Session, since: dt.datetime) -> list[MonitoredJob]:
    """Jobs created at or after ``since`` that the pipeline ran on, oldest first."""
    query = (
        select(
            Job.id,
            Job.study_id,
            Job.created_at,
            Job.evaluated,
            Job.label,
            Job.probability,
            Job.reason_code,
            Job.model_name,
            Job.model_version,
            Job.details["drift"],
        )
        .where(Job.created_at >= since, Job.evaluated.is_not(None))
        .order_by(Job.id)
    )
    return [MonitoredJob(*row) for row in session.execute(query)]


def verdicts_since(session: Session, since: dt.datetime) -> dict[int, bool]:
    """The truth of the verdict in force (the newest feedback) of each job created since."""
    newest = (
        select(func.max(Feedback.id))
        .join(Job, Job.id == Feedback.job_id)
        .where(Job.created_at >= since)
        .group_by(Feedback.job_id)
    )
    rows = session.execute(
        select(Feedback.job_id, Feedback.reference_positive).where(Feedback.id.in_(newest))
    )
    return {job_id: bool(truth) for job_id, truth in rows}
