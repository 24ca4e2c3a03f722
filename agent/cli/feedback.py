"""``liver-agent feedback import labels.csv``: labels from reports (accession, finding 0/1)
recorded as feedback from ``report import``; ``liver-agent feedback show JOB_ID``."""

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
from agent.feedback import FeedbackError, import_labels, job_feedback


def register(app: typer.Typer) -> None:
    feedback_app = typer.Typer(
        help="Radiologist feedback on findings: import labels from reports, show a job's.",
        no_args_is_help=True,
    )
    app.add_typer(feedback_app, name="feedback")

    @feedback_app.command("import")
    def import_(
        csv_file: Annotated[
            Path,
            typer.Argument(
                help="CSV with a header 'accession,finding'; finding 1: cirrhosis, 0: none",
                exists=True,
                dir_okay=False,
            ),
        ],
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        """Record report labels as feedback (user 'report import') on the newest job of each
        accession that has a finding; nothing is recorded when a line is bad."""
        settings = settings_or_exit(config)
        sessions = database_sessions(settings)
        try:
            text = csv_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            fail(f"cannot read {csv_file}: {err}")
        try:
            with sessions.begin() as session:
                labels = import_labels(session, text)
        except FeedbackError as err:
            fail(f"{err.message} ({err.code})")
        agree = sum(1 for label in labels if label.agree)
        if as_json:
            print_json(
                {
                    "imported": len(labels),
                    "agree": agree,
                    "disagree": len(labels) - agree,
                    "labels": [label.__dict__ for label in labels],
                }
            )
            return
        console.print(
            f"imported {len(labels)} label(s) as 'report import': {agree} agree with the "
            f"finding, {len(labels) - agree} disagree",
            highlight=False,
        )

    @feedback_app.command("show")
    def show(
        job_id: Annotated[int, typer.Argument(help="the job")],
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        """The verdicts on one job's finding, newest first (the newest is in force)."""
        settings = settings_or_exit(config)
        sessions = database_sessions(settings)
        with sessions() as session:
            views = job_feedback(session, job_id)
        if as_json:
            print_json([v.__dict__ for v in views])
            return
        table = Table(title=f"feedback on job {job_id}")
        for column in ("at (UTC)", "user", "verdict", "also", "comment"):
            table.add_column(column)
        for v in views:
            also = ", ".join(
                t
                for t, on in (("wrong slice", v.wrong_slice), ("wrong outline", v.wrong_outline))
                if on
            )
            table.add_row(
                v.at.isoformat()[:19],
                v.user,
                "agree" if v.agree else "disagree",
                also,
                v.comment or "",
            )
        console.print(table)
