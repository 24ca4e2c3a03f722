"""``liver-agent jobs ...`` and ``liver-agent studies list``: read and steer the job database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agent.cli._common import (
    ConfigOption,
    JsonOption,
    console,
    database_sessions,
    fail,
    print_json,
    settings_or_exit,
)
from agent.errors import AgentError
from agent.jobs import lifecycle
from agent.jobs.lifecycle import JobAction
from agent.jobs.summaries import job_detail, job_summary, study_view
from storage import queries
from storage.jobs import list_jobs
from storage.models import Job, JobStatus

STATUS_STYLE = {
    "queued": "cyan",
    "running": "blue",
    "delivering": "magenta",
    "done": "green",
    "not_evaluated": "yellow",
    "failed": "red",
    "cancelled": "dim",
}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def register(app: typer.Typer) -> None:
    jobs_app = typer.Typer(help="Jobs: list, show, retry, cancel.", no_args_is_help=True)
    studies_app = typer.Typer(help="Studies received.", no_args_is_help=True)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(studies_app, name="studies")

    @jobs_app.command("list")
    def jobs_list(
        status: Annotated[JobStatus | None, typer.Option(help="only jobs in this state")] = None,
        accession: Annotated[str | None, typer.Option(help="accession number")] = None,
        study: Annotated[str | None, typer.Option(help="Study Instance UID")] = None,
        created_from: Annotated[
            str | None,
            typer.Option("--from", help="created at or after: ISO date or date-time (UTC)"),
        ] = None,
        created_to: Annotated[
            str | None,
            typer.Option("--to", help="created before; a date alone includes that day"),
        ] = None,
        limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
        offset: Annotated[int, typer.Option(min=0)] = 0,
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        """Jobs, newest first."""
        from agent.jobs.filters import FilterError, parse_bound

        try:
            start = parse_bound("--from", created_from, upper=False)
            end = parse_bound("--to", created_to, upper=True)
        except FilterError as err:
            fail(str(err))
        sessions = database_sessions(settings_or_exit(config))
        with sessions() as session:
            jobs, total = list_jobs(
                session,
                status=status,
                accession_number=accession,
                study_instance_uid=study,
                created_from=start,
                created_to=end,
                limit=limit,
                offset=offset,
            )
            rows = [job_summary(j) for j in jobs]
        if as_json:
            print_json({"total": total, "jobs": [r.model_dump(mode="json") for r in rows]})
            return
        table = Table(title=f"jobs ({len(rows)} of {total})")
        for column in (
            "id",
            "v",
            "status",
            "study",
            "accession",
            "result",
            "p",
            "model",
            "created",
        ):
            table.add_column(column)
        for r in rows:
            style = STATUS_STYLE.get(r.status, "")
            model = (r.model_name or "") + (" [bold yellow]DEMO[/]" if r.model_demo else "")
            table.add_row(
                str(r.id),
                str(r.version),
                f"[{style}]{r.status}[/]",
                r.study_instance_uid,
                r.accession_number or "",
                r.label or (r.reason or ""),
                _fmt(r.probability),
                model,
                r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
        console.print(table)

    @jobs_app.command("show")
    def jobs_show(
        job_id: Annotated[int, typer.Argument(help="job id")],
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        """One job: study, result, stage timings, events, outputs and deliveries."""
        sessions = database_sessions(settings_or_exit(config))
        with sessions() as session:
            job = session.get(Job, job_id)
            if job is None:
                fail(f"no job {job_id}")
            detail = job_detail(session, job)
        if as_json:
            print_json(detail.model_dump(mode="json"))
            return
        d = detail
        style = STATUS_STYLE.get(d.status, "")
        console.print(
            f"[bold]job {d.id}[/] version {d.version} [{style}]{d.status}[/]"
            + (f" ({d.reason_code}: {d.reason})" if d.reason else ""),
            highlight=False,
        )
        if d.previous_job_id or d.next_job_id:
            console.print(
                f"previous version: {d.previous_job_id or '-'}; "
                f"next version: {d.next_job_id or '-'}"
            )
        console.print(
            f"study {d.study.study_instance_uid} (accession {d.accession_number or '-'}), "
            f"{d.instance_count} instances in {len(d.series)} series",
            highlight=False,
        )
        if d.evaluated:
            console.print(
                f"result: [bold]{d.label}[/] p={_fmt(d.probability)}; slice {d.slice_index} "
                f"({d.slice_sop_instance_uid}) of series {d.series_instance_uid}; liver area "
                f"{_fmt(d.liver_area_mm2, 0)} mm2, volume {_fmt(d.liver_volume_ml, 0)} ml; "
                f"model {d.model_name} {d.model_version}"
                + (" [bold yellow]DEMO[/]" if d.model_demo else ""),
                highlight=False,
            )
        if d.stages:
            stages = Table(title="stage timings")
            stages.add_column("stage")
            stages.add_column("seconds", justify="right")
            for s in d.stages:
                stages.add_row(s.stage, f"{s.seconds:.3f}")
            console.print(stages)
        events = Table(title="events")
        for column in ("at", "kind", "message"):
            events.add_column(column)
        for e in d.events:
            events.add_row(e.at.strftime("%H:%M:%S.%f")[:-3], e.kind, e.message)
        console.print(events)
        if d.outputs:
            outputs = Table(title="outputs")
            for column in ("kind", "SOP Instance UID", "available"):
                outputs.add_column(column)
            for o in d.outputs:
                outputs.add_row(o.kind, o.sop_instance_uid, "yes" if o.available else "cleaned")
            console.print(outputs)
        if d.deliveries:
            deliveries = Table(title="deliveries")
            for column in ("destination", "status", "attempts", "sent", "last error"):
                deliveries.add_column(column)
            for dl in d.deliveries:
                deliveries.add_row(
                    dl.destination,
                    dl.status,
                    str(dl.attempts),
                    f"{dl.objects_sent}/{dl.objects}",
                    dl.last_error or "",
                )
            console.print(deliveries)

    @jobs_app.command("preview")
    def jobs_preview(
        job_id: Annotated[int, typer.Argument(help="job id")],
        out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write")],
        config: ConfigOption = None,
    ) -> None:
        """Write the caudate-level slice with the liver outline as a PNG (as the web page)."""
        from agent.jobs.preview import PreviewUnavailable, job_preview
        from storage.spool import Spool

        settings = settings_or_exit(config)
        sessions = database_sessions(settings)
        with sessions() as session:
            job = session.get(Job, job_id)
            if job is None:
                fail(f"no job {job_id}")
            try:
                png, outlined = job_preview(session, Spool(settings.spool.path), job)
            except PreviewUnavailable as err:
                fail(err.message)
        out.write_bytes(png)
        note = "" if outlined else " (no SEG file left: no outline)"
        console.print(f"job {job_id}: preview written to {out}{note}", highlight=False)

    @jobs_app.command("retry")
    def jobs_retry(
        job_id: Annotated[int, typer.Argument(help="job id")], config: ConfigOption = None
    ) -> None:
        """Send a job's failed deliveries again, or run a failed job again."""
        _act(job_id, JobAction.RETRY, config)

    @jobs_app.command("cancel")
    def jobs_cancel(
        job_id: Annotated[int, typer.Argument(help="job id")], config: ConfigOption = None
    ) -> None:
        """Cancel a job that has not finished."""
        _act(job_id, JobAction.CANCEL, config)

    @studies_app.command("list")
    def studies_list(
        limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
        offset: Annotated[int, typer.Option(min=0)] = 0,
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        """Studies received, most recent first."""
        sessions = database_sessions(settings_or_exit(config))
        with sessions() as session:
            rows = [
                study_view(session, s)
                for s in queries.list_studies(session, limit=limit, offset=offset)
            ]
        if as_json:
            print_json([r.model_dump(mode="json") for r in rows])
            return
        table = Table(title=f"studies ({len(rows)})")
        for column in (
            "id",
            "Study Instance UID",
            "accession",
            "from",
            "status",
            "series",
            "instances",
            "last received",
            "job",
        ):
            table.add_column(column)
        for r in rows:
            table.add_row(
                str(r.id),
                r.study_instance_uid,
                r.accession_number or "",
                r.source_ae or "",
                r.status,
                str(r.series_count),
                str(r.instance_count),
                r.last_received_at.strftime("%Y-%m-%d %H:%M:%S"),
                str(r.latest_job_id or ""),
            )
        console.print(table)


def _act(job_id: int, action: JobAction, config: Path | None) -> None:
    """Run an admin action through the job lifecycle (the same call as the HTTP API)."""
    sessions = database_sessions(settings_or_exit(config))
    try:
        with sessions.begin() as session:
            outcome = lifecycle.perform(session, job_id, action)
    except AgentError as err:
        fail(err.message)
    console.print(f"job {job_id}: {outcome.message}")
