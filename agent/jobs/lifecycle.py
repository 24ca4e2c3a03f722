"""The job lifecycle: every change of a job's state goes through this module.

DESIGN.md, job states::

    queued -> running -> delivering -> done
                  |           |    \\-> not_evaluated   (every delivery done)
                  |           \\-> failed               (a delivery dead after its last retry)
                  |-> done | not_evaluated              (result, nothing to deliver)
                  |-> failed                            (error with a code)
                  \\-> queued                           (worker's heartbeat stopped)
    queued | running | delivering -> cancelled          (admin; queued and delivering also
                                                         when a newer version supersedes it)
    failed | cancelled | done | not_evaluated -> queued        (retry: run again)
    failed | cancelled | done | not_evaluated | delivering -> delivering  (retry: send again)

:data:`ALLOWED` is that table; :func:`apply` refuses anything not in it. The edges (worker,
deliverer, completion, CLI, HTTP API) call the named actions below; storage/ holds the queries.
Each function takes an open session and leaves committing to the caller.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.orm import Session

from agent.errors import AgentError
from storage import jobs, queries
from storage.models import Delivery, DeliveryStatus, EventKind, Job, JobStatus, utcnow


class JobAction(StrEnum):
    """Why a job changes state; each allowed change belongs to one action."""

    CLAIM = "claim"
    """A worker takes a queued job."""
    REQUEUE = "requeue"
    """A running job whose worker stopped beating goes back to the queue."""
    RECORD_RESULT = "record_result"
    """The worker recorded the pipeline's result: deliveries queued, or nothing to send."""
    FAIL = "fail"
    """An error with a code (pipeline, output, or a delivery dead after its last retry)."""
    SETTLE = "settle"
    """Every delivery is done."""
    CANCEL = "cancel"
    """An admin cancels a job that has not finished."""
    SUPERSEDE = "supersede"
    """A newer version of the study's job replaces a queued one, or one not yet delivered."""
    RETRY = "retry"
    """An admin retries: run the job again, or send its results again."""


_Q, _R, _DL = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DELIVERING
_DONE, _NE, _F, _C = JobStatus.DONE, JobStatus.NOT_EVALUATED, JobStatus.FAILED, JobStatus.CANCELLED
_FINISHED = (_F, _C, _DONE, _NE)

ALLOWED: frozenset[tuple[JobAction, JobStatus, JobStatus]] = frozenset(
    {
        (JobAction.CLAIM, _Q, _R),
        (JobAction.REQUEUE, _R, _Q),
        (JobAction.RECORD_RESULT, _R, _DL),
        (JobAction.RECORD_RESULT, _R, _DONE),
        (JobAction.RECORD_RESULT, _R, _NE),
        (JobAction.FAIL, _R, _F),
        (JobAction.FAIL, _DL, _F),
        (JobAction.SETTLE, _DL, _DONE),
        (JobAction.SETTLE, _DL, _NE),
        (JobAction.CANCEL, _Q, _C),
        (JobAction.CANCEL, _R, _C),
        (JobAction.CANCEL, _DL, _C),
        (JobAction.SUPERSEDE, _Q, _C),
        (JobAction.SUPERSEDE, _DL, _C),
        *((JobAction.RETRY, s, _Q) for s in _FINISHED),
        *((JobAction.RETRY, s, _DL) for s in (*_FINISHED, _DL)),
    }
)
"""Every allowed (action, from, to); anything else is refused."""


class JobTransitionError(AgentError):
    """A state change the lifecycle does not allow (code ``transition_refused``, or the
    action's own code such as ``not_retryable`` / ``not_cancellable``)."""


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker has claimed: what it needs to run it, read in the claim's transaction."""

    job_id: int
    study_id: int
    study_instance_uid: str
    source_ae: str | None


def is_allowed(action: JobAction, current: JobStatus, to: JobStatus) -> bool:
    return (action, current, to) in ALLOWED


def apply(
    session: Session,
    job: Job,
    action: JobAction,
    to: JobStatus,
    *,
    reason_code: str | None = None,
    reason: str | None = None,
) -> JobStatus:
    """Move ``job`` to ``to`` for ``action`` if the table allows it; log it on the timeline.

    Raises
    ------
    JobTransitionError
        ``transition_refused`` when (action, job.status, to) is not in :data:`ALLOWED`.
    """
    if not is_allowed(action, job.status, to):
        raise JobTransitionError(
            "transition_refused", f"job {job.id}: {action} cannot move a {job.status} job to {to}"
        )
    jobs.write_status(session, job, to, reason_code=reason_code, reason=reason)
    return to


# --- worker -------------------------------------------------------------------------------


def claim_next(session: Session, *, worker: str) -> ClaimedJob | None:
    """Atomically claim the oldest queued job for ``worker`` (queued -> running)."""
    assert is_allowed(JobAction.CLAIM, _Q, _R)  # the guarded UPDATE in storage makes this move
    job = jobs.claim_next_job(session, worker=worker)
    if job is None:
        return None
    return ClaimedJob(job.id, job.study_id, job.study.study_instance_uid, job.study.source_ae)


def requeue_stale(session: Session, *, older_than: dt.datetime) -> list[int]:
    """Running jobs whose worker stopped beating before ``older_than`` go back to the queue."""
    stale = jobs.stale_running_jobs(session, older_than=older_than)
    for job in stale:
        apply(
            session,
            job,
            JobAction.REQUEUE,
            _Q,
            reason_code="worker_lost",
            reason=f"worker {job.worker} stopped; re-queued",
        )
    return [j.id for j in stale]


def still_running(session: Session, job: Job) -> bool:
    """True while ``job`` is running; otherwise its result is discarded, with a timeline entry
    (an admin cancelled it, or it was re-queued, while the worker was busy)."""
    if job.status == _R:
        return True
    jobs.add_event(
        session,
        job.id,
        EventKind.DISCARDED,
        f"result discarded: job became {job.status} while running",
    )
    return False


def record_result(
    session: Session,
    job: Job,
    *,
    evaluated: bool,
    deliveries: int,
    silent_reason: str | None = None,
) -> JobStatus:
    """After the worker recorded the result: delivering when deliveries were queued, else the
    final state (done when evaluated, not_evaluated otherwise).

    ``silent_reason`` (a model in silent mode, :mod:`agent.deployment`): no delivery was
    queued on purpose; an evaluated job ends ``done`` with reason ``silent_mode`` and this
    text, an unevaluated one keeps its "not evaluated" reason (the timeline says it was silent).
    """
    if silent_reason is not None:
        if deliveries:
            raise JobTransitionError(
                "transition_refused", f"job {job.id}: a silent job queues no delivery"
            )
        if evaluated:
            return apply(
                session,
                job,
                JobAction.RECORD_RESULT,
                _DONE,
                reason_code="silent_mode",
                reason=silent_reason,
            )
        return apply(session, job, JobAction.RECORD_RESULT, _NE)
    if deliveries:
        return apply(session, job, JobAction.RECORD_RESULT, _DL)
    return apply(session, job, JobAction.RECORD_RESULT, _DONE if evaluated else _NE)


def fail(session: Session, job: Job, code: str, message: str) -> JobStatus | None:
    """A running or delivering job fails with ``code``; None (and a timeline entry) when the
    job is no longer one of those, so a late error changes nothing."""
    if job.status not in (_R, _DL):
        jobs.add_event(
            session,
            job.id,
            EventKind.DISCARDED,
            f"error discarded ({code}: {message}): job was already {job.status}",
        )
        return None
    return apply(session, job, JobAction.FAIL, _F, reason_code=code, reason=message)


# --- delivery -----------------------------------------------------------------------------


def settle_deliveries(session: Session, job_id: int) -> JobStatus | None:
    """Move a delivering job to its final state once no delivery is pending or sending.

    done (or not_evaluated) when every delivery is done; failed when any is dead. Returns the
    new final state, or None if the job stays as it is.
    """
    job = session.get_one(Job, job_id)
    if job.status != _DL:
        return None
    statuses = jobs.delivery_statuses(session, job_id)
    if statuses & {DeliveryStatus.PENDING, DeliveryStatus.SENDING}:
        return None
    if DeliveryStatus.DEAD in statuses:
        return apply(
            session,
            job,
            JobAction.FAIL,
            _F,
            reason_code="delivery_dead",
            reason="a delivery failed after its last retry",
        )
    return apply(session, job, JobAction.SETTLE, _DONE if job.evaluated else _NE)


def supersede_delivery(
    session: Session, delivery_id: int, *, newer_job_id: int
) -> JobStatus | None:
    """Cancel a delivery whose job a newer version superseded before it was sent (the PACS
    gets only the newest results); once none of the job's deliveries is left to send, the job
    ends ``cancelled`` (``superseded``), which is returned (else None)."""
    delivery = session.get_one(Delivery, delivery_id)
    delivery.status = DeliveryStatus.CANCELLED
    delivery.next_attempt_at = None
    job = session.get_one(Job, delivery.job_id)
    jobs.add_event(
        session,
        job.id,
        EventKind.SUPERSEDED,
        f"delivery to {delivery.destination} cancelled: job {newer_job_id} is a newer "
        "version of this study's results",
        {"destination": delivery.destination, "next_job_id": newer_job_id},
    )
    session.flush()
    if job.status != _DL or jobs.delivery_statuses(session, job.id) & {
        DeliveryStatus.PENDING,
        DeliveryStatus.SENDING,
    }:
        return None
    return apply(
        session,
        job,
        JobAction.SUPERSEDE,
        _C,
        reason_code="superseded",
        reason=f"superseded by job {newer_job_id} before delivery",
    )


# --- completion ---------------------------------------------------------------------------


def supersede(session: Session, previous: Job, *, by: Job) -> bool:
    """A new version ``by`` replaces ``previous``: a queued previous version is cancelled,
    since it would run on an incomplete study. True when it was cancelled."""
    if previous.status != _Q:
        return False
    apply(
        session,
        previous,
        JobAction.SUPERSEDE,
        _C,
        reason_code="superseded",
        reason=f"superseded by job {by.id}",
    )
    return True


# --- admin actions (CLI and HTTP API) -----------------------------------------------------


def retry(session: Session, job_id: int) -> str:
    """Manual retry (``liver-agent jobs retry``, ``POST /api/jobs/{id}/retry``).

    - deliveries that are dead or cancelled go back to pending, due now;
    - a finished job whose deliveries were all done sends them all again (an admin asked);
    - a job without deliveries that failed, was cancelled or finished is queued to run again.

    Returns a sentence saying what was done.

    Raises
    ------
    JobTransitionError
        ``not_retryable`` for a queued or running job, or one whose deliveries are under way;
        ``images_deleted`` to run a job again whose received images are gone (retention).
    """
    job = session.get_one(Job, job_id)
    if job.status in (_Q, _R):
        raise JobTransitionError("not_retryable", f"job {job_id} is {job.status}: nothing to retry")
    deliveries = jobs.deliveries_of(session, job_id)
    again = [d for d in deliveries if d.status in (DeliveryStatus.DEAD, DeliveryStatus.CANCELLED)]
    if not again and job.status in (_DONE, _NE):
        again = list(deliveries)
        for d in again:
            for item in d.items:
                item.sent_at = None
    if again:
        for d in again:
            d.status = DeliveryStatus.PENDING
            d.next_attempt_at = utcnow()
            d.attempts = 0
        job.finished_at = None
        apply(session, job, JobAction.RETRY, _DL, reason_code=None, reason=None)
        names = ", ".join(d.destination for d in again)
        jobs.add_event(session, job_id, EventKind.RETRY, f"manual retry: sending to {names}")
        return f"{len(again)} deliveries re-queued ({names})"
    if deliveries:
        raise JobTransitionError(
            "not_retryable", f"job {job_id}: its deliveries are still under way"
        )
    if queries.study_images_deleted(session, job.study_id):
        raise JobTransitionError(
            "images_deleted",
            f"job {job_id}: the study's received images were deleted after the retention "
            "period (spool.retention_days); send the study again to run it again",
        )
    job.finished_at = None
    job.reason_code = job.reason = None
    apply(session, job, JobAction.RETRY, _Q)
    jobs.add_event(session, job_id, EventKind.RETRY, "manual retry: job queued to run again")
    return "job re-queued"


def cancel(session: Session, job_id: int) -> str:
    """Cancel a job that has not finished; its pending deliveries are cancelled too.

    Raises
    ------
    JobTransitionError
        ``not_cancellable`` when the job is already in a final state.
    """
    job = session.get_one(Job, job_id)
    if job.status.is_final:
        raise JobTransitionError("not_cancellable", f"job {job_id} is already {job.status}")
    for d in jobs.deliveries_of(session, job_id):
        if d.status in (DeliveryStatus.PENDING, DeliveryStatus.SENDING):
            d.status = DeliveryStatus.CANCELLED
    apply(
        session, job, JobAction.CANCEL, _C, reason_code="cancelled", reason="cancelled by an admin"
    )
    return "job cancelled"


ADMIN_ACTIONS = {JobAction.RETRY: retry, JobAction.CANCEL: cancel}
"""What ``jobs retry|cancel`` (CLI) and ``POST /api/jobs/{id}/retry|cancel`` (HTTP) run."""


def admin_actions_for(status: JobStatus) -> frozenset[JobAction]:
    """The admin actions the table allows from ``status`` (what the web page offers)."""
    return frozenset(
        action for action, current, _ in ALLOWED if current == status and action in ADMIN_ACTIONS
    )


class JobNotFoundError(AgentError):
    """No job with that id (code ``job_not_found``)."""


@dataclass(frozen=True)
class ActionOutcome:
    """What an admin action did, and the job's state after it."""

    job_id: int
    status: JobStatus
    message: str


def perform(session: Session, job_id: int, action: JobAction) -> ActionOutcome:
    """Run an admin action (retry, cancel) on a job: the one entry point of the CLI and the
    HTTP API.

    Raises
    ------
    JobNotFoundError
        No such job.
    JobTransitionError
        The action is not possible in the job's state (``not_retryable``, ``not_cancellable``),
        or is not an admin action (``not_an_admin_action``).
    """
    act = ADMIN_ACTIONS.get(action)
    if act is None:
        raise JobTransitionError("not_an_admin_action", f"{action} is not an admin action")
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFoundError("job_not_found", f"no job {job_id}")
    message = act(session, job_id)
    return ActionOutcome(job_id, job.status, message)
