"""``/api/models``: the model bundles, their deployment modes (``live`` / ``silent``) and the
audit trail of switches; ``POST /api/models/{name}/mode`` switches one (``agent.deployment``).

Switching needs the role ``admin``. Who switched is the caller's token: ``api:<name>`` for a
named token as a Bearer credential, ``web:<name>`` for its web session; the shared token keeps
``api:token`` / ``web:session``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from agent import deployment
from agent.context import AgentContext
from agent.http.api import ApiError, ErrorBody
from agent.http.deps import AdminDep, CtxDep, SessionDep, require_login, require_token
from agent.settings import DeploymentMode

FLASH_COOKIE = "liver_agent_flash"  # agent.http.web's (which imports this module)

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["models"], dependencies=[Depends(require_token)])
pages = APIRouter(include_in_schema=False, dependencies=[Depends(require_login)])
MAX_FORM_BYTES = 8192

ModelName = Annotated[str, Path(min_length=1, max_length=deployment.MAX_NAME)]


class ModelView(BaseModel):
    """One model: its bundle (when loaded) and its deployment mode in force."""

    name: str
    task: str | None
    version: str | None
    demo: bool | None
    loaded: bool
    mode: str
    mode_source: str = Field(description="switch (recorded), settings (model.modes), default")
    changed_at: dt.datetime | None
    changed_by: str | None
    change_reason: str | None


class ModeChangeView(BaseModel):
    """One switch of a model's mode: who, when, why."""

    id: int
    model_name: str
    mode: str
    at: dt.datetime
    actor: str
    reason: str


class ModelList(BaseModel):
    default_mode: str
    models: list[ModelView]
    audit: list[ModeChangeView]


class ModeRequest(BaseModel):
    mode: DeploymentMode
    reason: str = Field(min_length=1, max_length=deployment.MAX_REASON, description="why")


def _change_view(change: deployment.ModeChange) -> ModeChangeView:
    return ModeChangeView(
        id=change.id,
        model_name=change.model_name,
        mode=change.mode.value,
        at=change.at,
        actor=change.actor,
        reason=change.reason,
    )


def model_list(ctx: AgentContext, session: Session) -> ModelList:
    """Every model the agent knows, with its mode, and the newest 100 switches (shared by the
    API and the web page)."""
    loaded = ctx.models.models
    infos = (
        {}
        if loaded is None
        else {m.info.name: m.info for m in (loaded.segmentation, loaded.classification)}
    )
    names = deployment.known_names(session, ctx.settings.model, list(infos))
    modes = deployment.modes_of(session, ctx.settings.model, names)
    views = []
    for name in names:
        info, mode = infos.get(name), modes[name]
        views.append(
            ModelView(
                name=name,
                task=info.task if info else None,
                version=info.version if info else None,
                demo=info.demo if info else None,
                loaded=info is not None,
                mode=mode.mode.value,
                mode_source=mode.source,
                changed_at=mode.changed_at,
                changed_by=mode.actor,
                change_reason=mode.reason,
            )
        )
    return ModelList(
        default_mode=ctx.settings.model.mode.value,
        models=views,
        audit=[_change_view(c) for c in deployment.audit_trail(session)],
    )


@router.get("/models", response_model=ModelList, summary="Models and their modes")
def api_models(ctx: CtxDep, session: SessionDep) -> ModelList:
    """Models (loaded, configured, or ever switched), their versions, modes, and the audit
    trail of mode switches (newest first)."""
    return model_list(ctx, session)


@router.post(
    "/models/{name}/mode",
    response_model=ModeChangeView,
    responses={422: {"model": ErrorBody}},
    summary="Switch a model live or silent",
)
def api_switch_mode(
    name: ModelName,
    body: ModeRequest,
    ctx: CtxDep,
    principal: AdminDep,
) -> ModeChangeView:
    """Switch model ``name`` to ``live`` or ``silent`` (recorded with who, when and why);
    jobs whose results are recorded from now on follow it. Role admin."""
    actor = principal.actor
    return _change_view(_switch(ctx, name, body.mode, actor, body.reason))


def _switch(
    ctx: AgentContext, name: str, mode: DeploymentMode, actor: str, reason: str
) -> deployment.ModeChange:
    try:
        with ctx.sessions.begin() as session:
            change = deployment.switch_mode(session, name, mode, actor=actor, reason=reason)
    except deployment.ModeSwitchError as err:
        raise ApiError(422, err.code, err.message) from err
    logger.info("model %s switched to %s by %s", change.model_name, change.mode, actor)
    return change


@pages.post("/models/mode")
async def page_switch_mode(request: Request, ctx: CtxDep, principal: AdminDep) -> Response:
    """The Models page's switch form (url-encoded ``name``, ``mode``, ``reason``; role admin)."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        return Response("form too large", status_code=413)
    form = parse_qs(raw.decode("utf-8", "replace"))
    name = (form.get("name") or [""])[0].strip()
    reason = (form.get("reason") or [""])[0].strip()
    try:
        mode = DeploymentMode((form.get("mode") or [""])[0])
        change = _switch(ctx, name, mode, principal.actor, reason[: deployment.MAX_REASON])
        text = f"{change.model_name} is {change.mode.value} now (by {change.actor})."
    except ValueError:
        text = "Choose live or silent."
    except ApiError as err:
        text = f"Not switched: {err.message}."
    response = RedirectResponse("/models", status_code=303)
    response.set_cookie(
        FLASH_COOKIE, quote(text), max_age=60, path="/", httponly=True, samesite="strict"
    )
    return response
