"""``liver-agent request``: retrieve one study from a source for the agent to process like a
pushed study (results delivered as configured)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.cli._common import ConfigOption, JsonOption, console, fail, print_json, settings_or_exit


def register(app: typer.Typer) -> None:
    @app.command("request")
    def request(
        study: Annotated[str, typer.Argument(help="accession number or Study Instance UID")],
        source_name: Annotated[str | None, typer.Option("--source", help="source name")] = None,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Retrieve one study from a source; the running agent processes it like a pushed one.

        C-GET and WADO-RS store the study in the agent's spool and database; C-MOVE sends it to
        the agent's own AE title (a running `serve`, else a temporary SCP of this command). The
        job is made by `liver-agent serve` once the study is complete.
        """
        _request(study, source_name, config, as_json)


def _request(study: str, source_name: str | None, config: Path | None, as_json: bool) -> None:
    from agent.context import open_context
    from agent.errors import IngestError, RetrieveError
    from agent.logs import configure_logging
    from agent.retrieve.on_demand import choose_source, request_study

    settings = settings_or_exit(config)
    configure_logging("WARNING")
    ctx = open_context(settings)
    try:
        source = choose_source(settings, source_name)
        outcome = request_study(ctx, source, study, scp_running=False)
    except (RetrieveError, IngestError) as err:
        fail(f"{err.code}: {err.message}")
    except OSError as err:
        fail(f"cannot listen for C-MOVE results on port {settings.dicom.port}: {err}")
    finally:
        ctx.ingestor.close()
    if as_json:
        print_json(vars(outcome))
        return
    console.print(
        f"study {outcome.study_instance_uid} from {outcome.source}: {outcome.series} series, "
        f"{outcome.instances} instances held; the agent's job follows once it is complete",
        highlight=False,
    )
