"""``liver-agent config check`` and ``liver-agent db upgrade``."""

from __future__ import annotations

import typer
import yaml

from agent.cli._common import ConfigOption, JsonOption, console, print_json, settings_or_exit
from agent.database import make_database_engine
from agent.settings import masked_dump
from storage.db import head_revision, upgrade


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Settings.", no_args_is_help=True)
    db_app = typer.Typer(help="Database.", no_args_is_help=True)
    app.add_typer(config_app, name="config")
    app.add_typer(db_app, name="db")

    @config_app.command("check")
    def config_check(config: ConfigOption = None, as_json: JsonOption = False) -> None:
        """Print the effective settings (secrets masked); exit 2 if the file is invalid."""
        settings = settings_or_exit(config)
        data = masked_dump(settings)
        if as_json:
            print_json(data)
        else:
            console.print(yaml.safe_dump(data, sort_keys=False).rstrip(), highlight=False)
            console.print("[green]settings are valid[/green]")

    @db_app.command("upgrade")
    def db_upgrade(config: ConfigOption = None) -> None:
        """Apply database migrations (the agent also does this at start)."""
        settings = settings_or_exit(config)
        engine = make_database_engine(settings)
        before = upgrade(engine)  # on PostgreSQL under an advisory lock: agents may be starting
        engine.dispose()
        console.print(f"database at revision {head_revision()} (was {before or 'empty'})")
