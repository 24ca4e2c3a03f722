"""``liver-agent cohort``: pull a site cohort from a source, run the pipeline on it (nothing
sent), export the labelling package; ``status`` and ``list`` show where each study stands."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.cli._common import (
    ConfigOption,
    JsonOption,
    console,
    err_console,
    fail,
    print_json,
    settings_or_exit,
)
from agent.context import AgentContext, open_context
from agent.errors import AgentError
from agent.logs import configure_logging
from agent.settings import RetrieveMethod, Settings, Source
from storage import cohorts as store

cohort_app = typer.Typer(
    help="Site cohorts: pull studies from a source, run the pipeline (nothing sent), export "
    "the caudate-level slices for labelling.",
    no_args_is_help=True,
)

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise typer.BadParameter("1 to 64 letters, digits, '_', '.' or '-'")
    return name


NameArgument = Annotated[str, typer.Argument(help="cohort name", callback=_check_name)]


def _date(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).strftime("%Y%m%d")
    except ValueError as err:
        raise typer.BadParameter("a date as YYYY-MM-DD or YYYYMMDD") from err


def _source(settings: Settings, name: str | None) -> Source:
    if not settings.sources:
        fail("no source is configured: add one under 'sources:' in the settings", 2)
    if name is None:
        if len(settings.sources) > 1:
            fail("several sources are configured: choose one with --source", 2)
        return settings.sources[0]
    source = settings.source(name)
    if source is None:
        fail(
            f"no source named {name!r} (configured: {', '.join(s.name for s in settings.sources)})",
            2,
        )
    return source


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,  # stdout stays for results (and --json)
        transient=False,
    )


def _open(config: Path | None) -> AgentContext:
    settings = settings_or_exit(config)
    configure_logging("WARNING" if settings.logging.level == "INFO" else settings.logging.level)
    return open_context(settings)


def register(app: typer.Typer) -> None:
    app.add_typer(cohort_app, name="cohort")


@cohort_app.command("pull")
def pull(
    name: NameArgument,
    source_name: Annotated[str | None, typer.Option("--source", help="source name")] = None,
    csv_file: Annotated[
        Path | None,
        typer.Option("--csv", help="CSV with an 'accession' or 'study_uid' column", dir_okay=False),
    ] = None,
    date_from: Annotated[str | None, typer.Option("--from", help="first study date")] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="last study date")] = None,
    description: Annotated[
        str | None, typer.Option(help="Study Description pattern (* and ? wildcards)")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find the cohort's studies on the source and retrieve the series the selection may choose.

    C-MOVE sends to the agent's own AE title: a running `liver-agent serve` takes the
    instances in, else this command listens on the agent's port until it ends. Re-running
    skips what is already retrieved; Ctrl-C keeps every instance already acknowledged.
    """
    from agent.cohorts.pull import CohortInputError, CohortPuller, requests_from_csv
    from agent.cohorts.receiver import move_receiver
    from agent.retrieve import StudyQuery, make_retriever

    if (csv_file is None) == (date_from is None and date_to is None):
        fail("give either --csv FILE or --from DATE/--to DATE", 2)
    ctx = _open(config)
    source = _source(ctx.settings, source_name)
    retriever = make_retriever(
        source,
        calling_ae=ctx.settings.dicom.ae_title,
        move_destination=source.move_destination or ctx.settings.dicom.ae_title,
    )
    puller = CohortPuller(ctx, source, retriever)
    try:
        if csv_file is not None:
            rows = puller.register(name, requested=requests_from_csv(csv_file), query=None)
        else:
            query = StudyQuery(
                date_from=_date(date_from), date_to=_date(date_to), description=description
            )
            rows = puller.register(name, requested=None, query=query)
    except CohortInputError as err:
        fail(err.message, 2)
    except AgentError as err:
        fail(f"{err.code}: {err.message}")
    if not as_json:
        console.print(
            f"cohort {name}: {len(rows)} studies to pull from {source.name} "
            f"({source.retrieve.value}, {source.max_concurrent_studies} at a time)",
            highlight=False,
        )
    try:
        with contextlib.ExitStack() as stack:
            if source.retrieve is RetrieveMethod.MOVE and rows:
                stack.enter_context(move_receiver(ctx))
            progress = stack.enter_context(_progress())
            task = progress.add_task("pulling", total=len(rows))
            summary = puller.pull(rows, on_done=lambda _o: progress.advance(task))
    except OSError as err:
        fail(
            f"cannot listen for C-MOVE results on port {ctx.settings.dicom.port}: {err} "
            "(start `liver-agent serve`, or free the port)"
        )
    finally:
        ctx.ingestor.close()
    failures = [o for o in summary.outcomes if o.status.value == "failed"]
    if as_json:
        print_json(
            {
                "cohort": name,
                "interrupted": summary.interrupted,
                "studies": [
                    {
                        "requested": o.requested,
                        "status": o.status.value,
                        "reason_code": o.reason_code,
                        "reason": o.reason,
                        "instances": o.instances,
                    }
                    for o in summary.outcomes
                ],
            }
        )
    else:
        from agent.cohorts.pull import summarise

        counts = summarise(summary.outcomes)
        console.print(
            "pulled: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing"),
            highlight=False,
        )
        for o in failures:
            console.print(f"  {o.requested}: {o.reason_code}: {o.reason}", highlight=False)
        if summary.interrupted:
            console.print("interrupted: run the same command again to resume", highlight=False)
    if summary.interrupted:
        raise typer.Exit(130)


@cohort_app.command("run")
def run(
    name: NameArgument,
    again: Annotated[bool, typer.Option("--again", help="also re-run processed studies")] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="studies at a time (default: worker.threads, at least 1)"),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Selection, segmentation and caudate slice (and the classifier's probability) on every
    retrieved study of the cohort. Nothing is sent to the PACS."""
    from agent.cohorts.process import process_cohort

    ctx = _open(config)
    with ctx.sessions() as session:
        cohort = store.get_cohort(session, name)
    if cohort is None:
        fail(f"no cohort named {name!r}: pull it first (liver-agent cohort pull)", 2)
    try:
        models = ctx.models.get()
    except AgentError as err:
        fail(f"{err.code}: {err.message}")
    with _progress() as progress:
        task = progress.add_task("processing", total=None)
        done = process_cohort(
            ctx,
            cohort,
            models,
            again=again,
            workers=workers or max(1, ctx.settings.worker.threads),
            on_done=lambda _p: progress.advance(task),
        )
        progress.update(task, total=len(done))
    if as_json:
        print_json(
            [
                {
                    "study_instance_uid": d.study_instance_uid,
                    "status": d.status.value,
                    "reason_code": d.reason_code,
                    "reason": d.reason,
                }
                for d in done
            ]
        )
        return
    console.print(f"cohort {name}: {len(done)} studies processed", highlight=False)
    for d in done:
        if d.reason_code:
            console.print(
                f"  {d.study_instance_uid}: {d.status.value}: {d.reason_code}: {d.reason}",
                highlight=False,
            )


@cohort_app.command("export")
def export(
    name: NameArgument,
    out: Annotated[Path, typer.Argument(help="folder to write the package into", file_okay=False)],
    config: ConfigOption = None,
) -> None:
    """Write the labelling package: labels.csv, slices (npz + png), contact sheet, cohort.json."""
    from agent.cohorts.export import export_cohort

    settings = settings_or_exit(config)
    if out.exists() and any(out.iterdir()):
        fail(f"{out} is not empty: choose a new folder", 2)
    from agent.cli._common import database_sessions

    sessions = database_sessions(settings)
    with sessions() as session:
        cohort = store.get_cohort(session, name)
        if cohort is None:
            fail(f"no cohort named {name!r}", 2)
        rows = store.cohort_studies(session, cohort)
        summary = export_cohort(settings, cohort, rows, out)
    console.print(
        f"cohort {name}: {summary.exported} studies exported to {out}"
        + (
            f", {summary.without_slice} without a slice (see cohort.json)"
            if summary.without_slice
            else ""
        ),
        highlight=False,
    )


@cohort_app.command("status")
def status(name: NameArgument, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Each study of the cohort: status and reason."""
    from agent.cli._common import database_sessions

    sessions = database_sessions(settings_or_exit(config))
    with sessions() as session:
        cohort = store.get_cohort(session, name)
        if cohort is None:
            fail(f"no cohort named {name!r}", 2)
        rows = [
            {
                "requested": r.requested,
                "study_instance_uid": r.study_instance_uid,
                "accession_number": r.accession_number,
                "status": r.status.value,
                "reason_code": r.reason_code,
                "reason": r.reason,
                "series_fetched": r.series_fetched,
                "instances": r.instances,
            }
            for r in store.cohort_studies(session, cohort)
        ]
    if as_json:
        print_json({"cohort": name, "studies": rows})
        return
    table = Table("requested", "study", "status", "instances", "reason")
    for r in rows:
        table.add_row(
            str(r["requested"]),
            str(r["study_instance_uid"] or ""),
            str(r["status"]),
            str(r["instances"]),
            f"{r['reason_code']}: {r['reason']}" if r["reason_code"] else "",
        )
    console.print(table)


@cohort_app.command("list")
def list_(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every cohort with its study count per status."""
    from agent.cli._common import database_sessions

    sessions = database_sessions(settings_or_exit(config))
    with sessions() as session:
        data: list[dict[str, Any]] = [
            {"name": c.name, "source": c.source, "created": c.created_at.isoformat(), "studies": n}
            for c, n in store.list_cohorts(session)
        ]
    if as_json:
        print_json(data)
        return
    for item in data:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(item["studies"].items()))
        console.print(
            f"{item['name']} ({item['source']}): {counts or 'no studies'}", highlight=False
        )
