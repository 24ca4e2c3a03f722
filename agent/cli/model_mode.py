"""``liver-agent model mode NAME live|silent --reason ...`` and ``liver-agent model modes``:
switch a model's deployment mode (recorded as ``cli:<unix user>``) and read the audit trail."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agent import deployment
from agent.cli._common import (
    ConfigOption,
    JsonOption,
    console,
    database_sessions,
    fail,
    print_json,
    settings_or_exit,
)
from agent.cli.model import model_app
from agent.settings import DeploymentMode


def register(app: typer.Typer) -> None:
    """Add ``model mode`` and ``model modes`` to the ``model`` group."""

    @model_app.command(
        "mode",
        help="Switch a model live or silent (audited: who, when, why); jobs recorded from now "
        "on follow it. A job is silent when either of its two bundles is.",
    )
    def model_mode(
        name: Annotated[str, typer.Argument(help="bundle name (manifest 'name')")],
        mode: Annotated[DeploymentMode, typer.Argument(help="live: send results; silent: keep")],
        reason: Annotated[str, typer.Option("--reason", help="why (kept in the audit trail)")],
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        """Switch a model's deployment mode (help text above: typer keeps line breaks)."""
        settings = settings_or_exit(config)
        sessions = database_sessions(settings)
        try:
            with sessions.begin() as session:
                known = deployment.known_names(session, settings.model, [])
                change = deployment.switch_mode(
                    session, name, mode, actor=deployment.cli_actor(), reason=reason
                )
        except deployment.ModeSwitchError as err:
            fail(f"{err.message} ({err.code})")
        if as_json:
            print_json(
                {
                    "id": change.id,
                    "model_name": change.model_name,
                    "mode": change.mode.value,
                    "at": change.at.isoformat(),
                    "actor": change.actor,
                    "reason": change.reason,
                }
            )
            return
        console.print(
            f"{change.model_name}: {change.mode.value} (by {change.actor} at "
            f"{change.at:%Y-%m-%d %H:%M:%S} UTC)",
            highlight=False,
        )
        if change.model_name not in known:
            console.print(
                f"note: no configured bundle is named {change.model_name} yet; the mode applies "
                "once one is",
                highlight=False,
            )

    @model_app.command("modes")
    def model_modes(
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        """Each known model's deployment mode, and the audit trail of switches (newest first)."""
        settings = settings_or_exit(config)
        sessions = database_sessions(settings)
        with sessions() as session:
            names = deployment.known_names(session, settings.model, [])
            modes = deployment.modes_of(session, settings.model, names)
            trail = deployment.audit_trail(session)
        if as_json:
            print_json(
                {
                    "default_mode": settings.model.mode.value,
                    "models": [
                        {"name": m.name, "mode": m.mode.value, "source": m.source}
                        for m in modes.values()
                    ],
                    "audit": [
                        {
                            "model_name": c.model_name,
                            "mode": c.mode.value,
                            "at": c.at.isoformat(),
                            "actor": c.actor,
                            "reason": c.reason,
                        }
                        for c in trail
                    ],
                }
            )
            return
        console.print(f"default mode: {settings.model.mode.value}", highlight=False)
        table = Table(title="models")
        for column in ("name", "mode", "from"):
            table.add_column(column)
        for m in modes.values():
            table.add_row(m.name, m.mode.value, m.source)
        console.print(table)
        audit = Table(title="mode switches")
        for column in ("at (UTC)", "model", "mode", "by", "why"):
            audit.add_column(column)
        for c in trail:
            audit.add_row(
                f"{c.at:%Y-%m-%d %H:%M:%S}", c.model_name, c.mode.value, c.actor, c.reason
            )
        console.print(audit)
