"""``liver-agent select``: which series of a study is the axial T2, and why the others are not."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agent.cli._common import (
    ConfigOption,
    JsonOption,
    console,
    fail,
    print_json,
    settings_or_exit,
)
from pipeline.errors import PipelineError
from pipeline.results import SeriesSelection
from pipeline.selection import load_rules, select_t2_series
from pipeline.study_headers import StudyHeaders, scan_study

RulesOption = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        help="selection rules YAML merged over the shipped rules "
        "(default: settings pipeline.selection_rules)",
        dir_okay=False,
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``select`` to the app."""

    @app.command("select")
    def select(
        study_dir: Annotated[
            Path, typer.Argument(help="folder (or file) with the study's DICOM files", exists=True)
        ],
        rules: RulesOption = None,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Choose the axial T2-weighted series of a study and say why (exit 0 even if none)."""
        if rules is None:
            rules = settings_or_exit(config).pipeline.selection_rules
        try:
            selection_rules = load_rules(rules)
            study = scan_study([study_dir])
        except PipelineError as err:
            fail(f"{err.code}: {escape(err.message)}", 2)
        selection = select_t2_series(study, selection_rules)
        if as_json:
            print_json(selection.to_json())
        else:
            _print_table(study, selection)


def _print_table(study: StudyHeaders, selection: SeriesSelection) -> None:
    n_images = sum(len(s.headers) for s in study.series)
    console.print(
        f"study {study.study_instance_uid}: {len(study.series)} series, {n_images} images",
        highlight=False,
    )
    if study.skipped:
        shown = escape("; ".join(f"{p.name}: {why}" for p, why in study.skipped[:3]))
        more = f" (and {len(study.skipped) - 3} more)" if len(study.skipped) > 3 else ""
        console.print(f"{len(study.skipped)} file(s) skipped: {shown}{more}", highlight=False)
    table = Table(title="why this series / why not", show_lines=True)
    table.add_column("series", justify="right")
    table.add_column("description")
    table.add_column("images", justify="right")
    table.add_column("score", justify="right")
    table.add_column("verdict")
    table.add_column("reasons")
    for candidate in selection.candidates:
        series = study.series_by_uid(candidate.series_instance_uid)
        if candidate.series_instance_uid == selection.series_instance_uid:
            verdict = "[bold green]chosen[/bold green]"
        elif candidate.eligible:
            verdict = "eligible, lower score"
        else:
            verdict = "[red]rejected[/red]"
        number = series.series_number
        table.add_row(
            "" if number is None else str(number),
            escape(candidate.description) or "(none)",
            str(len(series.headers)),
            f"{candidate.score:g}",
            verdict,
            escape("\n".join(candidate.reasons)),
        )
    console.print(table)
    if selection.series_instance_uid is None:
        console.print(
            "[yellow]no axial T2-weighted series: the study would not be evaluated[/yellow]"
        )
    else:
        chosen = study.series_by_uid(selection.series_instance_uid)
        console.print(
            f"chosen: series {chosen.series_number} '{escape(chosen.description)}' "
            f"({chosen.series_instance_uid})",
            highlight=False,
        )
