"""``liver-agent monitoring``: the monitoring report of ``GET /api/monitoring`` and the alerts of
``GET /api/alerts`` on the command line (``--fail-on-alert`` for cron jobs and scripts)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agent.cli._common import (
    ConfigOption,
    JsonOption,
    console,
    database_sessions,
    print_json,
    settings_or_exit,
)
from agent.monitoring import Proportion, monitoring_report


def _pct(p: Proportion) -> str:
    if p.estimate is None or p.low is None or p.high is None:
        return "-"
    return f"{100 * p.estimate:.1f} % ({100 * p.low:.1f}-{100 * p.high:.1f}, {p.k}/{p.n})"


def register(app: typer.Typer) -> None:
    @app.command("monitoring")
    def monitoring(
        fail_on_alert: Annotated[
            bool, typer.Option("--fail-on-alert", help="exit 1 when an alert is in force")
        ] = False,
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        """Per model version: jobs, positive share, drift flagged, and agreement with feedback
        (95 % Wilson intervals); then the alerts in force (settings: monitoring)."""
        settings = settings_or_exit(config)
        sessions = database_sessions(settings)
        with sessions() as session:
            report = monitoring_report(session, settings.monitoring)
        if as_json:
            print_json(report.model_dump(mode="json"))
        else:
            table = Table(title=f"monitoring, last {report.window_days} days")
            for column in (
                "model",
                "jobs",
                "positive",
                "drift",
                "feedback",
                "accuracy",
                "sensitivity",
                "specificity",
            ):
                table.add_column(column)
            for m in report.models:
                share = "-" if m.positive_share is None else f"{100 * m.positive_share:.1f} %"
                table.add_row(
                    f"{m.model_name} {m.model_version}",
                    str(m.jobs),
                    share,
                    str(m.drift_flagged),
                    str(m.agreement.cases),
                    _pct(m.agreement.accuracy),
                    _pct(m.agreement.sensitivity),
                    _pct(m.agreement.specificity),
                )
            console.print(table)
            for alert in report.alerts:
                console.print(f"[red]ALERT[/] {alert.kind}: {alert.message}", highlight=False)
            if not report.alerts:
                console.print("no alert")
        if fail_on_alert and report.alerts:
            raise typer.Exit(1)
