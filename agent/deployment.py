"""Deployment modes of the models: ``live`` (results go to the destinations) or ``silent``
(results are made and kept, shown on the job page, and sent nowhere).

A mode belongs to one model bundle, by its manifest ``name``. A job is silent when either
of its two bundles (segmentation, classification) is silent: the SEG and the SR travel
together, so the pair is live only when both are. The mode in force is the newest switch
recorded in the database (``liver-agent model mode``, ``POST /api/models/{name}/mode``),
else ``model.modes[name]`` in the settings, else ``model.mode``. Every switch is appended to
``model_mode_changes`` with who made it, when and why; the table is append-only.
"""

from __future__ import annotations

import datetime as dt
import getpass
from dataclasses import dataclass

from sqlalchemy.orm import Session

from agent.errors import AgentError
from agent.settings import DeploymentMode, ModelSettings
from storage import model_modes
from storage.models import ModelModeChange

MAX_NAME = 128
MAX_REASON = 2000
SILENT_REASON_CODE = "silent_mode"


class ModeSwitchError(AgentError):
    """A mode switch that cannot be recorded (``model_name_invalid``, ``reason_required``)."""


@dataclass(frozen=True)
class ModelMode:
    """The mode in force for one model, and where it comes from.

    ``source`` is ``switch`` (a recorded switch: ``actor``, ``changed_at`` and ``reason`` say
    who, when and why), ``settings`` (``model.modes``) or ``default`` (``model.mode``).
    """

    name: str
    mode: DeploymentMode
    source: str
    changed_at: dt.datetime | None = None
    actor: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ModeChange:
    """One entry of the audit trail."""

    id: int
    model_name: str
    mode: DeploymentMode
    at: dt.datetime
    actor: str
    reason: str


def cli_actor() -> str:
    """Who switches from the command line: ``cli:<unix user>`` (named API tokens do not
    exist yet, so this is what identifies a person today)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER
        user = "unknown"
    return f"cli:{user}"


def modes_of(session: Session, settings: ModelSettings, names: list[str]) -> dict[str, ModelMode]:
    """The mode in force of each model in ``names``."""
    switched = model_modes.latest_changes(session, names)
    found: dict[str, ModelMode] = {}
    for name in names:
        row = switched.get(name)
        if row is not None:
            found[name] = ModelMode(
                name, DeploymentMode(row.mode), "switch", row.at, row.actor, row.reason
            )
        elif name in settings.modes:
            found[name] = ModelMode(name, settings.modes[name], "settings")
        else:
            found[name] = ModelMode(name, settings.mode, "default")
    return found


def silent_reason(session: Session, settings: ModelSettings, names: list[str]) -> str | None:
    """Why a job made by the models ``names`` sends nothing, or None when all are live."""
    silent = [m for m in modes_of(session, settings, names).values() if m.mode == "silent"]
    if not silent:
        return None
    parts = []
    for m in silent:
        if m.source == "switch":
            when = m.changed_at.strftime("%Y-%m-%d %H:%M UTC") if m.changed_at else "?"
            parts.append(f"{m.name} switched to silent by {m.actor} at {when}: {m.reason}")
        else:
            where = "model.modes" if m.source == "settings" else "model.mode"
            parts.append(f"{m.name} is silent in the settings ({where})")
    return "silent mode, results kept and not sent to the PACS: " + "; ".join(parts)


def known_names(session: Session, settings: ModelSettings, loaded: list[str]) -> list[str]:
    """Every model name the agent knows: loaded or configured bundles, the settings' ``modes``
    and every model ever switched."""
    names = dict.fromkeys(loaded)
    names.update(dict.fromkeys(_configured_names(settings)))
    names.update(dict.fromkeys(settings.modes))
    names.update(dict.fromkeys(model_modes.latest_changes(session)))
    return list(names)


def _configured_names(settings: ModelSettings) -> list[str]:
    from agent.model_store import ModelStoreError, serving_bundles
    from pipeline.bundle import read_manifest
    from pipeline.errors import PipelineError

    try:
        paths = serving_bundles(settings)
    except ModelStoreError:
        paths = (settings.segmentation, settings.classification)  # reported where loaded
    names = []
    for path in paths:
        if path is None:
            continue
        try:
            names.append(read_manifest(path).name)
        except (PipelineError, OSError):
            continue  # a broken bundle is reported where it is loaded
    return names


def switch_mode(
    session: Session, name: str, mode: DeploymentMode, *, actor: str, reason: str
) -> ModeChange:
    """Record a switch of model ``name`` to ``mode``; jobs recorded from now on follow it.

    Any well-formed name is accepted, so a bundle can be made silent before it is installed.

    Raises
    ------
    ModeSwitchError
        ``model_name_invalid`` (empty or longer than 128 characters), ``reason_required``
        (no reason given, or longer than 2000 characters).
    """
    name = name.strip()
    reason = reason.strip()
    if not name or len(name) > MAX_NAME:
        raise ModeSwitchError("model_name_invalid", f"a model name has 1 to {MAX_NAME} characters")
    if not reason or len(reason) > MAX_REASON:
        raise ModeSwitchError(
            "reason_required", f"say why the mode changes (1 to {MAX_REASON} characters)"
        )
    row = model_modes.add_mode_change(
        session, model_name=name, mode=DeploymentMode(mode).value, actor=actor, reason=reason
    )
    return _change(row)


def audit_trail(session: Session, *, name: str | None = None, limit: int = 100) -> list[ModeChange]:
    """The switches, newest first."""
    return [_change(r) for r in model_modes.mode_changes(session, model_name=name, limit=limit)]


def _change(row: ModelModeChange) -> ModeChange:
    return ModeChange(
        row.id, row.model_name, DeploymentMode(row.mode), row.at, row.actor, row.reason
    )
