"""Study completion: a scheduled check that turns quiet studies into queued jobs."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from agent.jobs import lifecycle
from agent.metrics import Metrics
from agent.settings import CompletionSettings
from agent.t2_first import T2First
from storage import queries
from storage.jobs import add_event
from storage.models import EventKind, Job, Study, utcnow

logger = logging.getLogger(__name__)


def complete_ready_studies(
    sessions: sessionmaker[Session],
    settings: CompletionSettings,
    metrics: Metrics,
    on_queued: Callable[[], None] | None = None,
    *,
    watching_since: dt.datetime | None = None,
    t2_first: T2First | None = None,
) -> list[int]:
    """Queue a job for every study that meets the completion rule; return the job ids.

    Rule (DESIGN.md, data flow 2): the associations that brought the study were released (the
    latest of them not aborted) and nothing arrived for ``quiet_seconds``, or nothing arrived
    for ``stable_seconds`` since ``watching_since`` (the agent's start: a grace period for
    senders to resend after a restart). See :func:`storage.queries.studies_ready`.

    With ``t2_first`` (:mod:`agent.t2_first`), a study whose T2-first job still holds is only
    marked complete (the service starts those jobs from its own series watch).
    """
    now = utcnow()
    created: list[int] = []
    with sessions() as session:
        ready = queries.studies_ready(
            session,
            now=now,
            quiet_seconds=settings.quiet_seconds,
            stable_seconds=settings.stable_seconds,
            watching_since=watching_since,
        )
    for study_id in ready:
        stands = _stands(t2_first, study_id)
        if stands is not None:
            with sessions.begin() as session:
                if not queries.mark_study_complete(session, study_id):
                    continue
                job_id = queries.latest_job_id(session, study_id)
                if job_id is not None:
                    add_event(session, job_id, EventKind.STATUS, stands, {"t2_first": "stands"})
                study_uid = session.get_one(Study, study_id).study_instance_uid
            logger.info("study %s complete: T2-first job %s stands", study_uid, job_id)
            metrics.studies_completed.inc()
            continue
        with sessions.begin() as session:
            study = session.get_one(Study, study_id)
            age = (now - study.last_received_at).total_seconds()
            rule = (
                f"stable for {settings.stable_seconds:g} s"
                if age >= settings.stable_seconds
                else f"quiet for {settings.quiet_seconds:g} s after association release"
            )
            job = queries.complete_study(session, study_id, rule=rule)
            if job is None:
                continue
            if job.previous_job_id is not None:
                lifecycle.supersede(session, session.get_one(Job, job.previous_job_id), by=job)
            created.append(job.id)
            logger.info(
                "study %s complete (%s): job %s version %s queued",
                study.study_instance_uid,
                rule,
                job.id,
                job.version,
            )
        metrics.studies_completed.inc()
    if created and on_queued is not None:
        on_queued()
    return created


def _stands(t2_first: T2First | None, study_id: int) -> str | None:
    """Whether the study's T2-first job stands (see :meth:`T2First.stands`); when that cannot
    be decided, a new version runs, as for any study that completes."""
    if t2_first is None:
        return None
    try:
        return t2_first.stands(study_id)
    except Exception:
        logger.exception("T2-first: could not check study %s; a new job version runs", study_id)
        return None
