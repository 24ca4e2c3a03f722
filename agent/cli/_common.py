"""Shared pieces of the CLI: the app, the ``--config`` option, console output helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console, ConsoleDimensions
from sqlalchemy.orm import Session, sessionmaker

from agent.database import make_database_engine
from agent.settings import ConfigFileError, Settings, load_settings
from storage.db import make_sessionmaker, upgrade

app = typer.Typer(
    name="liver-agent",
    help="DICOM agent: liver segmentation and cirrhosis classification on T2-weighted MRI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

PIPE_WIDTH = 4096
"""Columns used when the output is not a terminal: wide enough that no message or table wraps."""


class CliConsole(Console):
    """A rich console that wraps at the terminal width only when it writes to a terminal.

    Output that goes to a pipe, a file or a test's captured stream is read by programs (grep, CI
    logs, tests). Rich would otherwise wrap it at ``$COLUMNS`` or 80 columns, so a long path could
    split a message across lines. The stream is looked up at print time (``sys.stdout`` may be
    swapped), and it is the stream's own ``isatty`` that decides, not ``FORCE_COLOR``.
    """

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        isatty = getattr(self.file, "isatty", None)
        if isatty is not None and isatty():
            return dims
        return ConsoleDimensions(PIPE_WIDTH, dims.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = CliConsole()
err_console = CliConsole(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="settings YAML file (default: $LIVER_AGENT_CONFIG, else built-in defaults)",
        exists=False,
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(settings)"
        lines.append(f"  {where}: {item['msg']}")
    return "invalid settings:\n" + "\n".join(lines)


def settings_or_exit(config: Path | None) -> Settings:
    """Load settings, or print which field is wrong and exit with status 2."""
    try:
        return load_settings(config)
    except ConfigFileError as err:
        fail(str(err), 2)
    except ValidationError as err:
        fail(format_validation_error(err), 2)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def database_sessions(settings: Settings) -> sessionmaker[Session]:
    """The database of ``settings`` (migrated to the head) for one CLI command."""
    engine = make_database_engine(settings)
    upgrade(engine)
    return make_sessionmaker(engine)
