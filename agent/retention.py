"""Retention: how long files stay on the agent.

- Received images (the spool): until every job of their study is final (done, not_evaluated,
  failed, cancelled) and ``spool.retention_days`` have passed since the last job finished and
  the last instance arrived; never while the study is open or a job is queued, running or
  delivering.
- Result files: until delivered and ``results.retention_days`` after.
- Files the native front end's storescp acknowledged and the agent refused (``rejected``):
  ``spool.retention_days`` after they arrived.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from storage import jobs, queries
from storage.models import EventKind, utcnow
from storage.spool import Spool

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


@dataclass(frozen=True)
class SpoolCleanup:
    """What one pass of :func:`clean_spool` deleted."""

    studies: int
    files: int
    bytes: int


def clean_spool(
    sessions: sessionmaker[Session],
    spool: Spool,
    retention_days: float,
    *,
    now: dt.datetime | None = None,
) -> SpoolCleanup:
    """Delete the received instances of studies past their retention (module docstring).

    Each study is re-checked and purged in its own transaction, which holds the study row
    (``FOR UPDATE`` on PostgreSQL, the write lock on SQLite), so an instance that arrives
    meanwhile re-opens the study first and the study is skipped. Instance rows go with their
    files (the study, series and jobs stay, with an event on the newest job); instances sent
    again later are stored anew and make a new job version. A file written after ``cutoff``
    is never deleted.
    """
    cutoff = (now or utcnow()) - dt.timedelta(days=retention_days)
    with sessions() as session:
        candidates = queries.studies_past_retention(session, cutoff=cutoff)
    studies = files = size = 0
    for study_id in candidates:
        with sessions.begin() as session:
            queries.lock_study(session, study_id)
            if study_id not in queries.studies_past_retention(session, cutoff=cutoff):
                continue  # something arrived or a job was retried meanwhile
            removed, removed_bytes, folders = _purge_study(session, spool, study_id, cutoff)
        spool.remove_empty_folders(folders)
        studies += 1
        files += removed
        size += removed_bytes
    if studies:
        logger.info(
            "retention: deleted %s received files (%s MiB) of %s studies, older than %s days",
            files,
            size // 2**20,
            studies,
            retention_days,
        )
    return SpoolCleanup(studies, files, size)


def _purge_study(
    session: Session, spool: Spool, study_id: int, cutoff: dt.datetime
) -> tuple[int, int, set[Path]]:
    rows = queries.study_instance_files(session, study_id)
    removed = removed_bytes = 0
    folders: set[Path] = set()
    for _, relative, size in rows:
        path = spool.path_of(relative)
        folders.add(path.parent)
        try:
            if path.stat().st_mtime >= cutoff.timestamp():
                logger.warning("retention: %s was written after the cutoff: kept", relative)
                continue
            path.unlink()
        except FileNotFoundError:
            pass  # gone already: the row goes all the same
        removed += 1
        removed_bytes += int(size)
    queries.forget_instances(session, study_id, [r[0] for r in rows])
    newest = queries.latest_job_id(session, study_id)
    if newest is not None:
        jobs.add_event(
            session,
            newest,
            EventKind.SPOOL_DELETED,
            f"received images deleted after the retention period ({removed} files)",
            {"files": removed, "bytes": removed_bytes},
        )
    return removed, removed_bytes, folders


def clean_rejected(folder: Path, retention_days: float, *, now: float | None = None) -> int:
    """Delete the native front end's refused files (and their ``.reason``) received more than
    ``retention_days`` ago: they will never have a job, and an admin was told (log, metric,
    ``/readyz``) when they came. Returns how many instances were deleted."""
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    removed = 0
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for path in entries:
        if path.name.endswith(".reason") or path.name.startswith("."):
            continue
        try:
            if path.stat().st_mtime >= cutoff:
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        path.with_name(path.name + ".reason").unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.info(
            "retention: deleted %s refused files in %s older than %s days",
            removed,
            folder,
            retention_days,
        )
    return removed


def spool_usage(sessions: sessionmaker[Session]) -> tuple[int, int]:
    """Received instances in the spool: (files, bytes), from the database."""
    with sessions() as session:
        return queries.spool_usage(session)


def apply_retention(
    sessions: sessionmaker[Session],
    spool: Spool,
    *,
    spool_days: float,
    results_days: float,
) -> None:
    """One pass of both retention rules (the service runs it every hour)."""
    clean_spool(sessions, spool, spool_days)
    clean_results(sessions, results_days)
