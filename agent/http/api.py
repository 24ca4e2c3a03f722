"""The admin API under ``/api``: jobs (list, detail, retry, cancel, preview) and studies.

Response models are the views of ``agent.views``, so ``liver-agent jobs show --json`` and
``GET /api/jobs/{id}`` say the same thing.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from agent.access import Role
from agent.context import AgentContext
from agent.errors import AgentError
from agent.http.deps import CtxDep, SessionDep, require_role, require_token
from agent.http.params import JobId, Limit, Offset
from agent.jobs import lifecycle
from agent.jobs.filters import FilterError, JobQuery
from agent.jobs.heatmap import job_heatmap
from agent.jobs.lifecycle import JobAction, JobNotFoundError
from agent.jobs.preview import PreviewUnavailable, job_preview
from agent.jobs.summaries import (
    JobDetail,
    JobSummary,
    StudyView,
    job_detail,
    job_summary,
    study_view,
)
from storage import queries
from storage.jobs import list_jobs
from storage.models import Job, JobStatus

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["jobs"], dependencies=[Depends(require_token)])


class ApiError(Exception):
    """An error answered as ``{"detail": message, "code": code}`` with an HTTP status."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message


class ErrorBody(BaseModel):
    detail: str
    code: str


class JobList(BaseModel):
    """One page of jobs, newest first, and how many match the filters in all."""

    total: int
    limit: int
    offset: int
    jobs: list[JobSummary]


class StudyList(BaseModel):
    total: int
    limit: int
    offset: int
    studies: list[StudyView]


class ActionResult(BaseModel):
    """What a retry or cancel did, and the job's state after it."""

    job_id: int
    status: str
    message: str


_NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"model": ErrorBody}}
_CONFLICT: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
}


def list_jobs_page(session: Session, query: JobQuery) -> JobList:
    """Run a job query (shared by the API and the web page)."""
    jobs, total = list_jobs(
        session,
        status=query.status,
        study_instance_uid=query.study_instance_uid,
        accession_number=query.accession_number,
        created_from=query.created_from,
        created_to=query.created_to,
        limit=query.limit,
        offset=query.offset,
    )
    return JobList(
        total=total,
        limit=query.limit,
        offset=query.offset,
        jobs=[job_summary(j) for j in jobs],
    )


def list_studies_page(session: Session, limit: int, offset: int) -> StudyList:
    total = queries.count_studies(session)
    studies = queries.list_studies(session, limit=limit, offset=offset)
    return StudyList(
        total=int(total),
        limit=limit,
        offset=offset,
        studies=[study_view(session, s) for s in studies],
    )


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    return job


def job_action(ctx: AgentContext, job_id: int, action: JobAction) -> ActionResult:
    """Retry or cancel a job in one transaction (shared by the API and the web page).

    Raises
    ------
    ApiError
        404 for an unknown job, 409 when the action is not possible now (with the reason).
    """
    try:
        with ctx.sessions.begin() as session:
            outcome = lifecycle.perform(session, job_id, action)
    except JobNotFoundError as err:
        raise ApiError(404, err.code, err.message) from err
    except AgentError as err:
        raise ApiError(409, err.code, err.message) from err
    if outcome.status == JobStatus.QUEUED:
        ctx.wake_workers.set()
    logger.info("job %s: %s via HTTP: %s", job_id, action, outcome.message)
    return ActionResult(job_id=job_id, status=str(outcome.status), message=outcome.message)


@router.get("/jobs", response_model=JobList, summary="List jobs")
def api_list_jobs(
    session: SessionDep,
    status: Annotated[JobStatus | None, Query(description="only jobs in this state")] = None,
    accession_number: Annotated[str | None, Query(max_length=16)] = None,
    study_instance_uid: Annotated[str | None, Query(max_length=64)] = None,
    created_from: Annotated[
        str | None, Query(description="ISO date or date-time (UTC unless a zone is given)")
    ] = None,
    created_to: Annotated[
        str | None, Query(description="exclusive; a date alone includes that whole day")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> JobList:
    """Jobs, newest first, with filters and paging; ``total`` counts every match."""
    try:
        query = JobQuery.parse(
            status=status.value if status else None,
            accession_number=accession_number,
            study_instance_uid=study_instance_uid,
            created_from=created_from,
            created_to=created_to,
            limit=limit,
            offset=offset,
        )
    except FilterError as err:
        raise HTTPException(status_code=422, detail=str(err)) from err
    return list_jobs_page(session, query)


@router.get("/jobs/{job_id}", response_model=JobDetail, responses=_NOT_FOUND, summary="One job")
def api_job(job_id: JobId, session: SessionDep) -> JobDetail:
    """Study and series, selection reasons, slice, result, timings, events, outputs and
    deliveries of one job."""
    return job_detail(session, get_job(session, job_id))


_ADMIN = [Depends(require_role(Role.ADMIN))]


@router.post(
    "/jobs/{job_id}/retry",
    response_model=ActionResult,
    responses=_CONFLICT,
    summary="Retry",
    dependencies=_ADMIN,
)
def api_retry(job_id: JobId, ctx: CtxDep) -> ActionResult:
    """Send dead deliveries again, or queue a failed job to run again (409 if not possible;
    role admin)."""
    return job_action(ctx, job_id, JobAction.RETRY)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=ActionResult,
    responses=_CONFLICT,
    summary="Cancel",
    dependencies=_ADMIN,
)
def api_cancel(job_id: JobId, ctx: CtxDep) -> ActionResult:
    """Cancel a job that has not finished (409 if it has; role admin)."""
    return job_action(ctx, job_id, JobAction.CANCEL)


@router.get(
    "/jobs/{job_id}/preview.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorBody}},
    summary="Preview PNG",
)
def api_preview(job_id: JobId, ctx: CtxDep, session: SessionDep) -> Response:
    """The caudate-level slice with the liver outline (404 with a reason if there is none)."""
    job = get_job(session, job_id)
    try:
        png, outlined = job_preview(session, ctx.spool, job)
    except PreviewUnavailable as err:
        raise ApiError(404, err.code, err.message) from err
    return Response(
        content=png,
        media_type="image/png",
        headers={
            "Cache-Control": "private, max-age=60",
            "X-Liver-Outline": "drawn" if outlined else "missing",
        },
    )


@router.get(
    "/jobs/{job_id}/heatmap.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorBody}},
    summary="Heat map PNG",
)
def api_heatmap(job_id: JobId, ctx: CtxDep, session: SessionDep) -> Response:
    """Where the classifier looked: its Grad-CAM heat map over the caudate-level slice (404
    with a reason if there is none)."""
    job = get_job(session, job_id)
    try:
        png = job_heatmap(job, ctx.settings.results.path)
    except PreviewUnavailable as err:
        raise ApiError(404, err.code, err.message) from err
    return Response(
        content=png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"}
    )


@router.get("/studies", response_model=StudyList, tags=["studies"], summary="List studies")
def api_studies(
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
) -> StudyList:
    """Studies received, most recent first."""
    return list_studies_page(session, limit, offset)
