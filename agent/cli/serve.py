"""``liver-agent serve``: run the agent until SIGINT or SIGTERM."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from agent.cli._common import ConfigOption, console, fail, settings_or_exit
from agent.errors import AgentError
from agent.logs import configure_logging
from agent.masking import mask_url_password
from agent.settings import AgentRole, ClusterSettings, Settings


def start_banner(settings: Settings, dicom_port: int, http_port: int | None) -> str:
    """The line ``serve`` prints once listening (no secret: the database URL is masked)."""
    d = settings.dicom
    role = settings.cluster.role
    listening = (
        f"DICOM AE [bold]{d.ae_title}[/bold] on {d.host}:{dicom_port}"
        + (" (native front end: storescp)" if d.native.enabled else "")
        if role != AgentRole.WORKER
        else "no DICOM listener"
    )
    return (
        "liver-agent"
        + (f" ({role})" if role != AgentRole.ALL else "")
        + f" listening: {listening}"
        + (
            f", HTTP on {'https' if settings.http.tls.enabled else 'http'}://"
            f"{settings.http.host}:{http_port}/"
            if http_port is not None
            else ""
        )
        + f"; database {mask_url_password(settings.database.url)}; spool {settings.spool.path}"
    )


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        config: ConfigOption = None,
        role: Annotated[
            AgentRole | None,
            typer.Option(
                help="all: everything; receiver: DICOM SCP, STOW-RS and study completion; "
                "worker: jobs and deliveries (overrides cluster.role)",
                case_sensitive=False,
            ),
        ] = None,
    ) -> None:
        """Run the agent: DICOM SCP, study completion, workers, deliveries, HTTP."""
        from agent.service import AgentService

        settings = settings_or_exit(config)
        if role is not None:
            settings = settings.model_copy(update={"cluster": ClusterSettings(role=role)})
        configure_logging(settings.logging.level, settings.logging.format.value)
        service = AgentService(settings)
        stop = threading.Event()

        def _stop(signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        try:
            service.start()
        except AgentError as err:  # e.g. the HTTP port is taken: say why, exit non-zero
            service.stop()
            fail(f"cannot start: {err.message} ({err.code})")
        console.print(
            start_banner(
                settings,
                settings.dicom.port if service.scp is None else service.scp.port,
                service.http.port if settings.http.enabled else None,
            ),
            highlight=False,
        )
        try:
            while not stop.wait(1.0):
                pass
        finally:
            service.stop()
