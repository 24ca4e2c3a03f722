"""The admin web page: server-rendered HTML (Jinja2) with a little JavaScript, no external
resources. Login stores an HMAC of the token in an HttpOnly, SameSite=Strict cookie."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, unquote, urlencode

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from agent import __version__
from agent.access import Principal, Role, hash_token
from agent.context import AgentContext
from agent.feedback import job_feedback
from agent.http.api import ApiError, get_job, job_action, list_jobs_page, list_studies_page
from agent.http.auth import COOKIE_MAX_AGE_S, COOKIE_NAME, TokenChecker
from agent.http.deps import (
    CtxDep,
    SessionDep,
    authenticated,
    get_checker,
    require_login,
    require_role,
    require_token,
)
from agent.http.models_api import model_list
from agent.http.params import MAX_PAGE, JobId, NumberOutOfRange, Offset, bounded_int
from agent.jobs.filters import FilterError, JobQuery
from agent.jobs.lifecycle import JobAction, admin_actions_for
from agent.jobs.summaries import JobDetail, job_detail
from storage import api_tokens
from storage.models import MAX_ROW_ID, JobStatus

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
FLASH_COOKIE = "liver_agent_flash"
REFRESH_SECONDS = 5
PAGE_SIZES = (25, 50, 100, 200)
MAX_LOGIN_BYTES = 8192

_ADMIN = [Depends(require_role(Role.ADMIN))]

router = APIRouter(include_in_schema=False)
pages = APIRouter(include_in_schema=False, dependencies=[Depends(require_login)])
fragments = APIRouter(include_in_schema=False, dependencies=[Depends(require_token)])


def _when(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _number(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["number"] = _number
    env.globals["version"] = __version__
    env.globals["statuses"] = [s.value for s in JobStatus]
    return Jinja2Templates(env=env)


def _templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


def _who(request: Request) -> dict[str, Any]:
    """The caller (set by the auth dependency) for templates: name, role, what it may do."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return {
        "who": principal,
        "can_give_feedback": principal is not None and principal.allows(Role.READER),
        "is_admin": principal is not None and principal.allows(Role.ADMIN),
    }


def _safe_next(target: str | None) -> str:
    """Only same-site paths (no scheme, no ``//host``) are followed after login."""
    target = target or "/"
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    flash = request.cookies.get(FLASH_COOKIE)
    response = _templates(request).TemplateResponse(
        request,
        name,
        {"flash": unquote(flash) if flash else None, **_who(request), **context},
        status_code=status,
    )
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


# --- login --------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request,
    checker: Annotated[TokenChecker, Depends(get_checker)],
    next: str = "/",
) -> Response:
    if authenticated(request, checker, request.headers.get("authorization")):
        return RedirectResponse(_safe_next(next), status_code=303)
    return _page(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    checker: TokenChecker = request.app.state.checker
    body = await request.body()
    if len(body) > MAX_LOGIN_BYTES:
        return Response("login form too large", status_code=413)
    form = parse_qs(body.decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0]
    target = _safe_next((form.get("next") or ["/"])[0])
    session_value = _session_value(request, checker, token)
    if session_value is None:
        logger.warning("web login refused from %s", request.client.host if request.client else "?")
        return _page(
            request,
            "login.html",
            {"next": target, "error": "That is not the agent's token."},
            status=401,
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        session_value,
        max_age=COOKIE_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _session_value(request: Request, checker: TokenChecker, token: str) -> str | None:
    """The session cookie for the shared token or a named, unrevoked token; None if neither."""
    if checker.token_ok(token):
        return checker.session_value()
    if not token.strip():
        return None
    ctx: AgentContext = request.app.state.ctx
    with ctx.sessions() as session:
        row = api_tokens.active_token_by_hash(session, hash_token(token))
    if row is None:
        return None
    logger.info("web login of the token %s (%s)", row.name, row.role)
    return checker.named_session_value(row.id, row.token_sha256)


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


# --- jobs ---------------------------------------------------------------------------------


def _job_query(request: Request) -> tuple[JobQuery, str | None]:
    params = request.query_params
    try:
        limit = bounded_int("limit", params.get("limit"), 50, 1, MAX_PAGE)
        offset = bounded_int("offset", params.get("offset"), 0, 0, MAX_ROW_ID)
    except NumberOutOfRange as err:
        raise HTTPException(status_code=422, detail=str(err)) from err
    try:
        query = JobQuery.parse(
            status=params.get("status"),
            accession_number=params.get("accession_number"),
            study_instance_uid=params.get("study_instance_uid"),
            created_from=params.get("created_from"),
            created_to=params.get("created_to"),
            limit=limit,
            offset=offset,
        )
    except FilterError as err:
        return JobQuery(), str(err)
    return query, None


def _jobs_context(request: Request, session: SessionDep) -> dict[str, Any]:
    query, error = _job_query(request)
    page = list_jobs_page(session, query)
    filters = {
        key: request.query_params.get(key, "")
        for key in (
            "status",
            "accession_number",
            "study_instance_uid",
            "created_from",
            "created_to",
        )
    }
    kept = {k: v for k, v in filters.items() if v}

    def page_url(offset: int) -> str:
        return "/?" + urlencode({**kept, "limit": query.limit, "offset": max(offset, 0)})

    return {
        "page": page,
        "filters": filters,
        "filter_error": error,
        "limit": query.limit,
        "page_sizes": PAGE_SIZES,
        "prev_url": page_url(query.offset - query.limit) if query.offset > 0 else None,
        "next_url": (
            page_url(query.offset + query.limit)
            if query.offset + query.limit < page.total
            else None
        ),
        "fragment_url": "/fragments/jobs?"
        + urlencode({**kept, "limit": query.limit, "offset": query.offset}),
        "refresh_seconds": REFRESH_SECONDS,
        "now_text": _when(dt.datetime.now(dt.UTC)),
    }


@pages.get("/", response_class=HTMLResponse)
def jobs_page(request: Request, session: SessionDep) -> Response:
    return _page(request, "jobs.html", _jobs_context(request, session))


@fragments.get("/fragments/jobs", response_class=HTMLResponse)
def jobs_fragment(request: Request, session: SessionDep) -> Response:
    return _templates(request).TemplateResponse(
        request, "_jobs_table.html", _jobs_context(request, session)
    )


def _job_context(detail: JobDetail) -> dict[str, Any]:
    details = detail.details or {}
    selection = details.get("selection") or {}
    chosen = selection.get("series_instance_uid") or detail.series_instance_uid
    series = {s.series_instance_uid: s for s in detail.series}
    candidates: list[dict[str, Any]] = sorted(
        (
            {
                "series_instance_uid": str(c.get("series_instance_uid") or ""),
                "description": str(c.get("description") or ""),
                "score": _float(c.get("score")),
                "eligible": bool(c.get("eligible")),
                "reasons": [str(r) for r in c.get("reasons") or []],
            }
            for c in selection.get("candidates") or []
            if isinstance(c, dict)
        ),
        key=lambda c: (c["series_instance_uid"] != chosen, -float(c["score"] or 0.0)),
    )
    total = sum(s.seconds for s in detail.stages if s.stage != "total") or 1.0
    offered = admin_actions_for(JobStatus(detail.status))
    return {
        "job": detail,
        "chosen_series": chosen,
        "series_by_uid": series,
        "candidates": candidates,
        "stage_total": total,
        "models": details.get("models") or [],
        "classification_mode": details.get("classification_mode"),
        "threshold": details.get("threshold"),
        "finding_withheld": details.get("finding_withheld"),
        "silent": details.get("deployment"),
        "drift": details.get("drift") if isinstance(details.get("drift"), dict) else None,
        "heatmap": details.get("heatmap") if isinstance(details.get("heatmap"), dict) else None,
        "final": JobStatus(detail.status).is_final,
        "can_retry": JobAction.RETRY in offered,
        "can_cancel": JobAction.CANCEL in offered,
        "refresh_seconds": REFRESH_SECONDS,
    }


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _job_detail(session: Session, job_id: int) -> JobDetail | None:
    try:
        return job_detail(session, get_job(session, job_id))
    except ApiError:
        return None


@pages.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: JobId, request: Request, session: SessionDep) -> Response:
    detail = _job_detail(session, job_id)
    if detail is None:
        return _page(request, "not_found.html", {"what": f"job {job_id}"}, status=404)
    context = {
        **_job_context(detail),
        "feedback": job_feedback(session, job_id),
        "has_finding": detail.label is not None,
    }
    return _page(request, "job.html", context)


@fragments.get("/fragments/jobs/{job_id}", response_class=HTMLResponse)
def job_fragment(job_id: JobId, request: Request, session: SessionDep) -> Response:
    detail = _job_detail(session, job_id)
    if detail is None:
        return HTMLResponse(f"<p>No job {job_id}.</p>", status_code=404)
    return _templates(request).TemplateResponse(
        request, "_job_body.html", {**_who(request), **_job_context(detail)}
    )


def _action(ctx: CtxDep, job_id: int, action: JobAction) -> Response:
    try:
        result = job_action(ctx, job_id, action)
        text = f"Job {job_id}: {result.message}."
    except ApiError as err:
        text = f"Job {job_id}: {action} not possible: {err.message}."
    response = RedirectResponse(f"/jobs/{job_id}", status_code=303)
    response.set_cookie(
        FLASH_COOKIE, quote(text), max_age=60, path="/", httponly=True, samesite="strict"
    )
    return response


@pages.post("/jobs/{job_id}/retry", dependencies=_ADMIN)
def job_retry(job_id: JobId, ctx: CtxDep) -> Response:
    return _action(ctx, job_id, JobAction.RETRY)


@pages.post("/jobs/{job_id}/cancel", dependencies=_ADMIN)
def job_cancel(job_id: JobId, ctx: CtxDep) -> Response:
    return _action(ctx, job_id, JobAction.CANCEL)


# --- studies ------------------------------------------------------------------------------


@pages.get("/studies", response_class=HTMLResponse)
def studies_page(request: Request, session: SessionDep, offset: Offset = 0) -> Response:
    limit = 50
    page = list_studies_page(session, limit, max(offset, 0))
    return _page(
        request,
        "studies.html",
        {
            "page": page,
            "prev_url": f"/studies?offset={max(offset - limit, 0)}" if offset > 0 else None,
            "next_url": (
                f"/studies?offset={offset + limit}" if offset + limit < page.total else None
            ),
        },
    )


# --- models -------------------------------------------------------------------------------


@pages.get("/models", response_class=HTMLResponse)
def models_page(request: Request, ctx: CtxDep, session: SessionDep) -> Response:
    """Each model's deployment mode (live / silent) and who switched it, when and why."""
    return _page(request, "models.html", {"page": model_list(ctx, session)})
