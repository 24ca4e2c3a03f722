"""``liver-agent health`` and ``liver-agent http token``: the CLI side of ``/readyz`` and of the
HTTP token (the named tokens with roles are ``agent.cli.api_tokens``)."""

from __future__ import annotations

import ssl
from typing import Annotated, Any

import typer
from requests.adapters import HTTPAdapter
from rich.table import Table

from agent.cli._common import ConfigOption, JsonOption, console, fail, print_json, settings_or_exit
from agent.cli.api_tokens import register_token_commands
from agent.settings import Settings
from agent.tls import own_certificate_context

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def agent_url(settings: Settings) -> str:
    """Base URL of the running agent's HTTP server, as seen from this host."""
    host = _WILDCARDS.get(settings.http.host, settings.http.host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.http.tls.enabled else "http"
    return f"{scheme}://{host}:{settings.http.port}"


class _PinnedAdapter(HTTPAdapter):
    """HTTPS with our own SSL context (the agent's pinned certificate, no hostname check)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        kwargs["assert_hostname"] = False
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Leave verification to the pinned context (requests would load its CA bundle)."""


def _agent_checks(settings: Settings) -> list[dict[str, Any]]:
    """Ask the running agent's ``/readyz``; its model check only exists there."""
    import requests

    from agent.tokens import resolve_token

    url = agent_url(settings) + "/readyz"
    resolved = resolve_token(settings, create=False)
    headers = {"Authorization": f"Bearer {resolved.value}"} if resolved else {}
    try:
        with requests.Session() as session:
            session.trust_env = False  # loopback: no proxy, no CA bundle from the environment
            if settings.http.tls.enabled:
                session.mount(
                    "https://", _PinnedAdapter(own_certificate_context(settings.http.tls))
                )
            response = session.get(url, headers=headers, timeout=5)
    except (requests.RequestException, ValueError) as err:
        return [{"name": "agent", "ok": False, "detail": f"not reachable at {url}: {err}"}]
    if response.status_code == 401:
        return [{"name": "agent", "ok": False, "detail": f"{url} refused our token (401)"}]
    if response.status_code not in (200, 503):
        return [{"name": "agent", "ok": False, "detail": f"{url} answered {response.status_code}"}]
    checks: list[dict[str, Any]] = [
        {"name": "agent", "ok": True, "detail": f"running, answers at {agent_url(settings)}"}
    ]
    for check in response.json().get("checks", []):
        if check.get("name") == "models":
            checks.append({**check, "name": "agent models"})
        elif not check.get("ok"):
            checks.append({**check, "name": f"agent {check.get('name')}"})
    return checks


def register(app: typer.Typer) -> None:
    http_app = typer.Typer(help="The HTTP API: its tokens.", no_args_is_help=True)
    app.add_typer(http_app, name="http")
    token_app = typer.Typer(
        help="The shared API token (no subcommand; counts as admin), and named tokens with "
        "roles (create, list, revoke)."
    )
    http_app.add_typer(token_app, name="token")
    register_token_commands(token_app)

    @app.command("health")
    def health(as_json: JsonOption = False, config: ConfigOption = None) -> None:
        """Readiness checks like GET /readyz: database, spool disk, models; exit 1 on failure.

        The model check asks the running agent over HTTP, with the token.
        """
        from agent.context import open_context
        from agent.health import readiness

        settings = settings_or_exit(config)
        ctx = open_context(settings, migrate=False)
        try:
            checks = [c.model_dump() for c in readiness(ctx, models=False).checks]
        finally:
            ctx.engine.dispose()
        if settings.http.enabled:
            checks += _agent_checks(settings)
        ready = all(c["ok"] for c in checks)
        if as_json:
            print_json({"ready": ready, "checks": checks})
        else:
            table = Table(title="liver-agent health")
            for column in ("check", "", "detail"):
                table.add_column(column)
            for c in checks:
                mark = "[green]ok[/]" if c["ok"] else "[red]FAIL[/]"
                table.add_row(c["name"], mark, c["detail"])
            console.print(table)
            console.print("[green]ready[/]" if ready else "[red]not ready[/]")
        if not ready:
            raise typer.Exit(1)

    @token_app.callback(invoke_without_command=True)
    def http_token(
        context: typer.Context,
        show: Annotated[
            bool, typer.Option("--show", help="print the token itself (for scripts)")
        ] = False,
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        """Where the API token comes from; --show prints the token alone.

        The token is http.token from the settings, or the token file next to the database
        (made now if missing). It counts as the role admin. Named tokens with roles:
        `liver-agent http token create NAME --role viewer|reader|admin`, `list`, `revoke NAME`.
        """
        if context.invoked_subcommand is not None:
            return
        from agent.errors import HttpConfigError
        from agent.tokens import TokenSource, resolve_token

        settings = settings_or_exit(config)
        try:
            resolved = resolve_token(settings, create=True)
        except HttpConfigError as err:
            fail(err.message)
        assert resolved is not None
        if show:
            typer.echo(resolved.value)
            return
        if as_json:
            print_json(
                {
                    "source": resolved.source.value,
                    "path": str(resolved.path) if resolved.path else None,
                    "url": agent_url(settings),
                }
            )
            return
        if resolved.source is TokenSource.SETTINGS:
            where = "from the settings (http.token or LIVER_AGENT__HTTP__TOKEN)"
        elif resolved.source is TokenSource.GENERATED:
            where = f"generated now into {resolved.path} (mode 0600); the agent reads it at start"
        else:
            where = f"in {resolved.path}"
        console.print(f"API token {where}", highlight=False)
        console.print(
            f"use it as 'Authorization: Bearer <token>' at {agent_url(settings)}/ "
            "(`liver-agent http token --show` prints it)",
            highlight=False,
        )
