"""``liver-agent run``: the pipeline on one study folder, without the network or the database."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from agent.cli._common import (
    ConfigOption,
    JsonOption,
    console,
    err_console,
    fail,
    print_json,
    settings_or_exit,
)
from agent.settings import Device, Settings

logger = logging.getLogger(__name__)

StudyArgument = Annotated[
    Path,
    typer.Argument(help="folder (or file) with the study's DICOM files", exists=True),
]
OutOption = Annotated[
    Path,
    typer.Option("--out", "-o", help="folder for the result objects (SEG, SR, SC)"),
]
SegModelOption = Annotated[
    Path | None,
    typer.Option("--seg-model", help="segmentation bundle folder (default: settings, else DEMO)"),
]
ClsModelOption = Annotated[
    Path | None,
    typer.Option("--cls-model", help="classification bundle folder (default: settings, else DEMO)"),
]
DeviceOption = Annotated[
    Device | None, typer.Option("--device", help="auto, cpu or cuda (default: settings)")
]
ScOption = Annotated[
    bool, typer.Option("--sc/--no-sc", help="also write the Secondary Capture overlay")
]


def register(app: typer.Typer) -> None:
    """Add ``run`` to the app."""

    @app.command("run")
    def run(
        study_dir: StudyArgument,
        out: OutOption,
        as_json: JsonOption = False,
        seg_model: SegModelOption = None,
        cls_model: ClsModelOption = None,
        device: DeviceOption = None,
        sc: ScOption = False,
        config: ConfigOption = None,
    ) -> None:
        """Evaluate one study: chosen series, caudate slice, cirrhosis probability.

        Writes the result objects (SEG, SR; with --sc the Secondary Capture) into OUT.

        Exit status: 0 evaluated or not evaluated (the output says which); 1 failure.
        """
        settings = settings_or_exit(config)
        summary = run_study(
            study_dir,
            out,
            settings,
            seg_model=seg_model,
            cls_model=cls_model,
            device=device,
            sc=sc,
            progress=not as_json,
        )
        if as_json:
            print_json(summary)
        else:
            print_summary(summary)


def run_study(
    study_dir: Path,
    out: Path,
    settings: Settings,
    *,
    seg_model: Path | None = None,
    cls_model: Path | None = None,
    device: Device | None = None,
    sc: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Scan, evaluate and write the outputs of one study; the result as plain data.

    Exits with status 1 (code and message on stderr) when a stage fails.
    """
    from pipeline.errors import NotEvaluatedError, PipelineError
    from pipeline.outputs import OutputOptions, build_outputs, write_outputs
    from pipeline.run import Models, PipelineOptions, result_to_json, run_pipeline
    from pipeline.study_headers import scan_study

    try:
        started = time.perf_counter()
        try:
            study = scan_study([study_dir])
        except NotEvaluatedError as err:
            return _not_evaluated_without_study(err, time.perf_counter() - started)
        scanned = time.perf_counter() - started
        seg_path, cls_path = _bundle_paths(settings, seg_model, cls_model, progress)
        models = Models.load(
            seg_path,
            cls_path,
            device=str(device or settings.model.device),
            runtime=settings.model.runtime,
            cache=settings.model.cache_dir,
        )
        options = PipelineOptions(
            caudate_fraction=settings.pipeline.caudate_fraction,
            selection_rules=settings.pipeline.selection_rules,
        )
        result = run_pipeline(study, models, options)
        started = time.perf_counter()
        objects = build_outputs(result, OutputOptions(sc=sc))
        try:
            written = write_outputs(objects, out)
        except OSError as err:
            fail(escape(f"[output_write] cannot write the result objects to {out}: {err}"), 1)
        summary = result_to_json(result)
        summary["timings"]["scan"] = round(scanned, 4)
        summary["timings"]["outputs"] = round(time.perf_counter() - started, 4)
        summary["outputs"] = [str(p) for p in written]
        return summary
    except PipelineError as err:
        fail(escape(f"[{err.code}] {err.message}"), 1)


def _bundle_paths(
    settings: Settings, seg_model: Path | None, cls_model: Path | None, progress: bool
) -> tuple[Path, Path]:
    from agent.model_store import ModelStoreError, serving_bundles
    from pipeline.demo_bundles import bundle_paths

    try:
        serving_segmentation, serving_classification = serving_bundles(settings.model)
    except ModelStoreError as err:
        fail(escape(f"[{err.code}] {err.message}"), 1)
    segmentation = seg_model or serving_segmentation
    classification = cls_model or serving_classification
    if progress and (segmentation is None or classification is None):
        err_console.print(
            "no model bundle configured for a task: using the [bold]DEMO[/bold] bundle "
            "(synthetic training data; it evaluates only the project's phantom studies) from "
            f"{settings.model.cache_dir}",
            highlight=False,
        )
    return bundle_paths(segmentation, classification, settings.model.cache_dir, progress=progress)


def _not_evaluated_without_study(err: Exception, seconds: float) -> dict[str, Any]:
    return {
        "evaluated": False,
        "reason_code": getattr(err, "code", None),
        "reason": getattr(err, "message", str(err)),
        "study_instance_uid": None,
        "series": None,
        "selection": None,
        "slice": None,
        "classification": None,
        "liver_volume_ml": None,
        "models": None,
        "timings": {"scan": round(seconds, 4)},
        "outputs": [],
    }


def print_summary(summary: dict[str, Any]) -> None:
    """Print a ``run`` result for a person (values printed as text, never as markup)."""

    def say(*parts: str | tuple[str, str]) -> None:
        console.print(Text.assemble(*parts), highlight=False)

    if summary["study_instance_uid"]:
        say(f"study     {summary['study_instance_uid']}")
    series = summary["series"]
    if series is not None:
        slices = f" ({series['slices']} slices)" if series["slices"] else ""
        say(f"series    {series['series_instance_uid']}  {series['description']!r}{slices}")
    if not summary["evaluated"]:
        say(("not evaluated", "yellow"), f" [{summary['reason_code']}]: {summary['reason']}")
        for candidate in (summary["selection"] or {}).get("candidates", []):
            eligible = candidate["eligible"]
            reasons = [r for r in candidate["reasons"] if eligible or r.startswith("rejected")]
            say(
                f"  {'eligible' if eligible else 'rejected':8} {candidate['score']:7.1f}  "
                f"{candidate['description']!r}  {'; '.join(reasons)}"
            )
    cut = summary["slice"]
    if cut is not None:
        say(
            f"slice     index {cut['index']} (liver on {cut['liver_first_index']}-"
            f"{cut['liver_last_index']}), SOP Instance UID {cut['sop_instance_uid']}"
        )
        say(f"liver     area {cut['liver_area_mm2']:.0f} mm2 on that slice")
    if summary["liver_volume_ml"] is not None:
        say(f"volume    {summary['liver_volume_ml']:.0f} ml")
    result = summary["classification"]
    if result is not None:
        say(
            "result    ",
            (result["label"], "bold"),
            f", probability {result['probability']:.3f} "
            f"(threshold {result['threshold']:g}, {result['mode']})",
        )
    for task, info in (summary["models"] or {}).items():
        if info is not None:
            demo: tuple[str, str] = (" DEMO", "bold red") if info["demo"] else ("", "")
            say(f"model     {task}: {info['name']} {info['version']}", demo)
    say("timings   " + ", ".join(f"{k} {v:.3f} s" for k, v in summary["timings"].items()))
    outputs = summary.get("outputs") or []
    say(f"outputs   {', '.join(outputs) if outputs else 'none'}")
