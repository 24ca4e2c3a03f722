"""Retention: result files are kept until delivered and for a retention period after."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from storage import jobs
from storage.models import utcnow

logger = logging.getLogger(__name__)


def clean_results(sessions: sessionmaker[Session], retention_days: float) -> int:
    """Delete result files of jobs that finished more than ``retention_days`` ago.

    A job is finished only when every delivery is done (or dead / cancelled), so nothing
    undelivered is removed. The output rows stay, with ``path`` cleared. Returns the count.
    """
    cutoff = utcnow() - dt.timedelta(days=retention_days)
    removed = 0
    with sessions.begin() as session:
        for output in jobs.expired_outputs(session, finished_before=cutoff):
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
