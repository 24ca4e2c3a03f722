"""``liver-agent http token create|list|revoke``: named API tokens with roles
(``agent.access``). A new token is printed once; the database keeps only its hash."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agent.access import Role, TokenError, cli_actor, create_token, revoke_token
from agent.cli._common import (
    ConfigOption,
    JsonOption,
    console,
    database_sessions,
    fail,
    print_json,
    settings_or_exit,
)
from storage import api_tokens


def register_token_commands(token_app: typer.Typer) -> None:
    """Add ``create``, ``list`` and ``revoke`` to the ``http token`` group."""

    @token_app.command("create")
    def create(
        name: Annotated[str, typer.Argument(help="who holds it (shown as the feedback's user)")],
        role: Annotated[
            Role,
            typer.Option(
                "--role", help="viewer: read; reader: also give feedback; admin: everything"
            ),
        ] = Role.VIEWER,
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        """Make a named token with a role; it is printed once and never again."""
        settings = settings_or_exit(config)
        sessions = database_sessions(settings)
        try:
            with sessions.begin() as session:
                row, value = create_token(session, name, role, created_by=cli_actor())
        except TokenError as err:
            fail(f"{err.message} ({err.code})")
        if as_json:
            print_json({"name": row.name, "role": row.role, "token": value})
            return
        console.print(
            f"token '{row.name}' ({row.role}) made; it is shown this once:", highlight=False
        )
        typer.echo(value)
        console.print(
            "use it as 'Authorization: Bearer <token>' or log in with it on the web page",
            highlight=False,
        )

    @token_app.command("list")
    def list_(
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        """The named tokens: name, role, made when and by whom, revoked when (never the token)."""
        settings = settings_or_exit(config)
        sessions = database_sessions(settings)
        with sessions() as session:
            rows = api_tokens.list_tokens(session)
        items = [
            {
                "name": r.name,
                "role": r.role,
                "created_at": r.created_at.isoformat(),
                "created_by": r.created_by,
                "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
            }
            for r in rows
        ]
        if as_json:
            print_json(items)
            return
        if not items:
            console.print("no named token (the shared token still works: role admin)")
            return
        table = Table(title="named API tokens")
        for column in ("name", "role", "created (UTC)", "by", "revoked (UTC)"):
            table.add_column(column)
        for item in items:
            table.add_row(
                str(item["name"]),
                str(item["role"]),
                str(item["created_at"])[:19],
                str(item["created_by"]),
                str(item["revoked_at"] or "")[:19],
            )
        console.print(table)

    @token_app.command("revoke")
    def revoke(
        name: Annotated[str, typer.Argument(help="the token's name")],
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        """Revoke a named token now: its requests get 401 and its web sessions end."""
        settings = settings_or_exit(config)
        sessions = database_sessions(settings)
        try:
            with sessions.begin() as session:
                row = revoke_token(session, name)
                revoked_at = row.revoked_at
        except TokenError as err:
            fail(f"{err.message} ({err.code})")
        if as_json:
            print_json({"name": name, "revoked_at": revoked_at.isoformat() if revoked_at else None})
            return
        console.print(f"token '{name}' revoked", highlight=False)
