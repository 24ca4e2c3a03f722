"""Readiness checks (``GET /readyz``, ``liver-agent health``): database, spool disk, models."""

from __future__ import annotations

import shutil

from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from agent.context import AgentContext
from agent.retention import spool_usage
from agent.settings import AgentRole
from storage.db import current_revision, head_revision, ping


class Check(BaseModel):
    """One readiness check: its name, whether it passed, and what it found."""

    name: str
    ok: bool
    detail: str


class Readiness(BaseModel):
    """All checks; ``ready`` when every one passed."""

    ready: bool
    checks: list[Check]


def check_database(ctx: AgentContext) -> Check:
    """The database answers and its schema is at the migration head."""
    try:
        ping(ctx.engine)
        revision = current_revision(ctx.engine)
    except SQLAlchemyError as err:
        return Check(name="database", ok=False, detail=f"unreachable: {type(err).__name__}")
    head = head_revision()
    if revision != head:
        return Check(
            name="database",
            ok=False,
            detail=f"schema at {revision}, code expects {head} (`liver-agent db upgrade`)",
        )
    return Check(name="database", ok=True, detail=f"reachable, schema {revision}")


def check_spool(ctx: AgentContext) -> Check:
    """The spool exists and has more free disk than ``spool.min_free_mb``; what it holds."""
    minimum = ctx.settings.spool.min_free_mb
    try:
        free_mb = shutil.disk_usage(ctx.spool.root).free // 2**20
    except OSError as err:
        return Check(name="spool", ok=False, detail=f"{ctx.spool.root}: {err.strerror}")
    try:
        files, used = spool_usage(ctx.sessions)
        held = f"{files} files, {used / 2**20:.1f} MiB kept; "
    except SQLAlchemyError:
        held = ""  # the database check says why
    ok = free_mb >= minimum
    detail = f"{held}{free_mb} MiB free, minimum {minimum} MiB"
    return Check(name="spool", ok=ok, detail=detail if ok else f"{detail}: C-STORE is refused")


def check_models(ctx: AgentContext) -> Check:
    """The networks are loaded (only where this process runs workers)."""
    if ctx.settings.worker.threads == 0:
        return Check(name="models", ok=True, detail="not needed: worker.threads is 0")
    models = ctx.models.models
    if models is not None:
        seg, cls = models.segmentation.info, models.classification.info
        demo = " (DEMO)" if seg.demo or cls.demo else ""
        return Check(
            name="models",
            ok=True,
            detail=f"loaded: {seg.name} {seg.version}, {cls.name} {cls.version}{demo}",
        )
    if ctx.models.error is not None:
        return Check(name="models", ok=False, detail=ctx.models.error)
    return Check(name="models", ok=False, detail="loading (or not started)")


def check_native(ctx: AgentContext) -> Check:
    """With the native front end: storescp runs; how many received files wait to be taken in,
    and how many were refused after storescp acknowledged them (kept in the spool's
    ``rejected`` folder: an admin should look at them)."""
    from agent.native_receiver import front_end_state

    pid, waiting, refused = front_end_state(ctx.settings.dicom, ctx.spool.root)
    detail = (
        f"storescp {'pid ' + str(pid) if pid else 'not running'}; {waiting} received files "
        f"waiting to be taken in; {refused} refused files in {ctx.spool.root / 'rejected'}"
    )
    return Check(name="native_front_end", ok=pid is not None, detail=detail)


def readiness(ctx: AgentContext, *, models: bool = True) -> Readiness:
    """Run the checks; ``models=False`` leaves the model check out (a CLI process)."""
    checks = [check_database(ctx), check_spool(ctx)]
    if ctx.settings.dicom.native.enabled and ctx.settings.cluster.role != AgentRole.WORKER:
        checks.append(check_native(ctx))
    if models:
        checks.append(check_models(ctx))
    return Readiness(ready=all(c.ok for c in checks), checks=checks)
