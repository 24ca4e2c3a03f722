"""Routing of results: which destinations get a study's results, which result objects to build
for them (one SEG variant per group of destinations), and which objects each one receives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent import __version__
from agent.settings import Destination, Settings
from storage.models import OutputKind

if TYPE_CHECKING:
    from pipeline.outputs import ResultObject
    from pipeline.results import PipelineResult


@dataclass(frozen=True)
class OutputPlan:
    """Which result objects to build, and which destinations get which of them."""

    omit_empty_frames: bool
    destinations: tuple[Destination, ...]
    sc_heatmap: bool = False


@dataclass(frozen=True)
class PlannedObject:
    """A built result object and the plan it was built for (None: no destination, kept only)."""

    plan: OutputPlan | None
    obj: ResultObject


def destinations_for(settings: Settings, source_ae: str | None) -> list[Destination]:
    """Destinations of a study: ``route: always`` ones, and ``route: source`` ones whose AE
    title is the one that sent the study (results go back to the sending PACS)."""
    chosen = []
    for destination in settings.destinations:
        if destination.route == "always" or (
            destination.ae_title is not None and destination.ae_title == source_ae
        ):
            chosen.append(destination)
    return chosen


def _wants_heatmap_sc(destination: Destination) -> bool:
    return destination.send.sc and destination.send.sc_heatmap


def plan_outputs(destinations: list[Destination]) -> list[OutputPlan]:
    """Group destinations by SEG variant (empty frames kept or omitted) and SC variant (with
    or without the heat map burned in)."""
    plans = []
    for omit in (False, True):
        for heat in (False, True):
            group = tuple(
                d
                for d in destinations
                if d.seg_omit_empty_frames == omit and _wants_heatmap_sc(d) == heat
            )
            if group:
                plans.append(OutputPlan(omit, group, heat))
    return plans


def wanted_kinds(destination: Destination, evaluated: bool) -> set[OutputKind]:
    """The kinds of result object ``destination`` receives for an (un)evaluated study."""
    send = destination.send
    if not evaluated:
        return {OutputKind.NOT_EVALUATED_SR} if send.not_evaluated_sr else set()
    kinds = (
        (OutputKind.SEG, send.seg),
        (OutputKind.SR, send.sr),
        (OutputKind.SC, send.sc),
        (OutputKind.KOS, send.kos),
    )
    return {kind for kind, on in kinds if on}


def build_objects(result: PipelineResult, destinations: list[Destination]) -> list[PlannedObject]:
    """Build each SEG variant's objects; with no destination, the default set is kept."""
    from pipeline.outputs import OutputOptions, build_outputs

    plans: list[OutputPlan | None] = list(plan_outputs(destinations)) or [None]
    built: list[PlannedObject] = []
    for plan in plans:
        group = plan.destinations if plan is not None else ()
        options = OutputOptions(
            seg=not group or any(d.send.seg for d in group),
            sr=not group or any(d.send.sr for d in group),
            sc=any(d.send.sc for d in group),
            kos=any(d.send.kos for d in group),
            not_evaluated_sr=not group or any(d.send.not_evaluated_sr for d in group),
            omit_empty_frames=plan.omit_empty_frames if plan is not None else False,
            sc_heatmap=plan.sc_heatmap if plan is not None else False,
        )
        for obj in build_outputs(result, options, software_version=__version__):
            built.append(PlannedObject(plan, obj))
    return built
