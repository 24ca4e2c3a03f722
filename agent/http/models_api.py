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

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from agent import deployment
from agent.context import AgentContext
from agent.http.api import ApiError, ErrorBody
from agent.http.deps import AdminDep, CtxDep, SessionDep, require_token
from agent.settings import DeploymentMode

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["models"], dependencies=[Depends(require_token)])

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
    try:
        with ctx.sessions.begin() as session:
            change = deployment.switch_mode(
                session, name, body.mode, actor=actor, reason=body.reason
            )
    except deployment.ModeSwitchError as err:
        raise ApiError(422, err.code, err.message) from err
    logger.info("model %s switched to %s by %s", change.model_name, change.mode, actor)
    return _change_view(change)
