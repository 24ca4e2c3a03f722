"""Radiologist feedback over HTTP: ``POST /api/jobs/{id}/feedback`` (role reader) and
``GET /api/jobs/{id}/feedback``, and the job page's form (``POST /jobs/{id}/feedback``). The
user recorded is the caller's token name (``agent.access``)."""

from __future__ import annotations

import datetime as dt
import logging
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from agent.access import Principal, Role
from agent.feedback import (
    MAX_COMMENT,
    FeedbackError,
    FeedbackSource,
    FeedbackView,
    job_feedback,
    record_feedback,
)
from agent.http.api import ApiError, ErrorBody, get_job
from agent.http.deps import (
    CtxDep,
    ReaderDep,
    SessionDep,
    require_login,
    require_role,
    require_token,
)
from agent.http.params import JobId
from agent.http.web import FLASH_COOKIE

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["feedback"], dependencies=[Depends(require_token)])
pages = APIRouter(include_in_schema=False, dependencies=[Depends(require_login)])

MAX_FORM_BYTES = 16384


class FeedbackRequest(BaseModel):
    """A verdict on the job's finding."""

    agree: bool = Field(description="true: the finding is right; false: it is wrong")
    wrong_slice: bool = Field(default=False, description="the caudate-level slice is wrong")
    wrong_outline: bool = Field(default=False, description="the liver outline is wrong")
    comment: str | None = Field(default=None, max_length=MAX_COMMENT)


class FeedbackOut(BaseModel):
    id: int
    job_id: int
    agree: bool
    reference_positive: bool = Field(description="the truth the verdict implies")
    wrong_slice: bool
    wrong_outline: bool
    comment: str | None
    user: str = Field(description="the token's name, or 'report import'")
    source: str
    at: dt.datetime

    @classmethod
    def of(cls, view: FeedbackView) -> FeedbackOut:
        return cls(**view.__dict__)


class FeedbackList(BaseModel):
    job_id: int
    feedback: list[FeedbackOut]


_STATUS = {"job_not_found": 404, "no_finding": 409}


def give_feedback(
    ctx: CtxDep,
    job_id: int,
    principal: Principal,
    source: FeedbackSource,
    body: FeedbackRequest,
) -> FeedbackView:
    """Record a verdict in one transaction (shared by the API and the page)."""
    try:
        with ctx.sessions.begin() as session:
            view = record_feedback(
                session,
                job_id,
                agree=body.agree,
                user=principal.name,
                source=source,
                wrong_slice=body.wrong_slice,
                wrong_outline=body.wrong_outline,
                comment=body.comment,
            )
    except FeedbackError as err:
        raise ApiError(_STATUS.get(err.code, 422), err.code, err.message) from err
    logger.info(
        "job %s: feedback %s by %s", job_id, "agree" if body.agree else "disagree", principal.name
    )
    return view


@router.post(
    "/jobs/{job_id}/feedback",
    response_model=FeedbackOut,
    status_code=201,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
    summary="Agree or disagree with a job's finding",
)
def api_give_feedback(
    job_id: JobId, body: FeedbackRequest, ctx: CtxDep, principal: ReaderDep
) -> FeedbackOut:
    """Append a verdict on the finding (role reader); the user is the token's name. 409 when
    the job has no finding."""
    return FeedbackOut.of(give_feedback(ctx, job_id, principal, FeedbackSource.API, body))


@router.get(
    "/jobs/{job_id}/feedback",
    response_model=FeedbackList,
    responses={404: {"model": ErrorBody}},
    summary="The verdicts on a job's finding",
)
def api_job_feedback(job_id: JobId, session: SessionDep) -> FeedbackList:
    """Every verdict on the job, newest first (the newest is the one in force)."""
    get_job(session, job_id)
    return FeedbackList(
        job_id=job_id, feedback=[FeedbackOut.of(v) for v in job_feedback(session, job_id)]
    )


@pages.post("/jobs/{job_id}/feedback", dependencies=[Depends(require_role(Role.READER))])
async def page_give_feedback(job_id: JobId, request: Request, ctx: CtxDep) -> Response:
    """The job page's feedback form (url-encoded): verdict, wrong_slice, wrong_outline,
    comment."""
    principal: Principal = request.state.principal
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        return Response("feedback form too large", status_code=413)
    form = parse_qs(raw.decode("utf-8", "replace"))
    verdict = (form.get("verdict") or [""])[0]
    if verdict not in ("agree", "disagree"):
        text = f"Job {job_id}: choose agree or disagree."
    else:
        body = FeedbackRequest(
            agree=verdict == "agree",
            wrong_slice=bool(form.get("wrong_slice")),
            wrong_outline=bool(form.get("wrong_outline")),
            comment=(form.get("comment") or [""])[0][:MAX_COMMENT] or None,
        )
        try:
            give_feedback(ctx, job_id, principal, FeedbackSource.WEB, body)
            text = f"Job {job_id}: your feedback ({verdict}) is recorded as {principal.name}."
        except ApiError as err:
            text = f"Job {job_id}: feedback not recorded: {err.message}."
    response = RedirectResponse(f"/jobs/{job_id}#feedback", status_code=303)
    response.set_cookie(
        FLASH_COOKIE, quote(text), max_age=60, path="/", httponly=True, samesite="strict"
    )
    return response
