"""Retention: result files are kept until delivered and for a retention period after."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.models import Job, JobStatus, Output, utcnow

logger = logging.getLogger(__name__)

_FINAL = [JobStatus.DONE, JobStatus.NOT_EVALUATED, JobStatus.FAILED, JobStatus.CANCELLED]


def clean_results(sessions: sessionmaker[Session], retention_days: float) -> int:
    """Delete result files of jobs that finished more than ``retention_days`` ago.

    A job is finished only when every delivery is done (or dead / cancelled), so nothing
    undelivered is removed. The output rows stay, with ``path`` cleared. Returns the count.
    """
    cutoff = utcnow() - dt.timedelta(days=retention_days)
    removed = 0
    with sessions.begin() as session:
        rows = session.scalars(
            select(Output)
            .join(Job, Job.id == Output.job_id)
            .where(Job.status.in_(_FINAL), Job.finished_at < cutoff, Output.path.is_not(None))
        ).all()
        for output in rows:
            assert output.path is not None
            path = Path(output.path)
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # other files remain in the job's folder
                path.parent.rmdir()
            output.path = None
            removed += 1
    if removed:
        logger.info(
            "retention: removed %s result files older than %s days", removed, retention_days
        )
    return removed
