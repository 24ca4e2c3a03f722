"""Named API tokens with roles: every route walked with each role (viewer, reader, admin, the
shared token), hashed storage, revoking, web login with a named token, and the CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from agent.access import Role, create_token, hash_token
from agent.cli import app as cli_app
from agent.context import AgentContext, open_context
from agent.http.app import create_app
from agent.http.auth import COOKIE_NAME
from storage import api_tokens
from storage.models import ApiToken
from tests.agent.http_data import AUTH, processed_job, settings_for
from tests.cli_output import unwrapped

#: the role each route needs; None: public. A route missing here fails the walk below, so a
#: new route must say who may call it.
ROUTE_ROLES: dict[tuple[str, str], Role | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/login"): None,
    ("POST", "/login"): None,
    ("POST", "/logout"): None,
    ("GET", "/readyz"): Role.VIEWER,
    ("GET", "/metrics"): Role.VIEWER,
    ("GET", "/openapi.json"): Role.VIEWER,
    ("GET", "/api/jobs"): Role.VIEWER,
    ("GET", "/api/jobs/{job_id}"): Role.VIEWER,
    ("GET", "/api/jobs/{job_id}/preview.png"): Role.VIEWER,
    ("GET", "/api/jobs/{job_id}/heatmap.png"): Role.VIEWER,
    ("POST", "/api/jobs/{job_id}/retry"): Role.ADMIN,
    ("POST", "/api/jobs/{job_id}/cancel"): Role.ADMIN,
    ("GET", "/api/studies"): Role.VIEWER,
    ("GET", "/api/models"): Role.VIEWER,
    ("POST", "/api/models/{name}/mode"): Role.ADMIN,
    ("POST", "/dicomweb/studies"): Role.ADMIN,
    ("POST", "/dicomweb/studies/{study}"): Role.ADMIN,
    ("GET", "/api/jobs/{job_id}/feedback"): Role.VIEWER,
    ("POST", "/api/jobs/{job_id}/feedback"): Role.READER,
    ("POST", "/jobs/{job_id}/feedback"): Role.READER,
    ("GET", "/api/monitoring"): Role.VIEWER,
    ("GET", "/api/alerts"): Role.VIEWER,
    ("POST", "/api/requests"): Role.ADMIN,
    ("GET", "/monitoring"): Role.VIEWER,
    ("POST", "/models/mode"): Role.ADMIN,
    ("GET", "/"): Role.VIEWER,
    ("GET", "/jobs/{job_id}"): Role.VIEWER,
    ("POST", "/jobs/{job_id}/retry"): Role.ADMIN,
    ("POST", "/jobs/{job_id}/cancel"): Role.ADMIN,
    ("GET", "/studies"): Role.VIEWER,
    ("GET", "/models"): Role.VIEWER,
    ("GET", "/fragments/jobs"): Role.VIEWER,
    ("GET", "/fragments/jobs/{job_id}"): Role.VIEWER,
}


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    # bundles that do not exist: /api/models answers at once (not loaded) instead of building
    # the DEMO bundles, which is not what these tests are about
    missing = {"segmentation": tmp_path / "no-seg", "classification": tmp_path / "no-cls"}
    context = open_context(settings_for(tmp_path, model=missing))
    yield context
    context.engine.dispose()


@pytest.fixture
def client(ctx: AgentContext) -> TestClient:
    return TestClient(create_app(ctx), base_url="http://127.0.0.1:8080")


def make_tokens(ctx: AgentContext) -> dict[Role, str]:
    tokens = {}
    with ctx.sessions.begin() as session:
        for role in Role:
            _, tokens[role] = create_token(session, f"dr-{role.value}", role, created_by="test")
    return tokens


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every route of the app, through included routers (FastAPI >= 0.16x
    keeps them as ``_IncludedRouter`` entries with a prefix)."""
    found: list[tuple[str, str]] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.extend((m, prefix + route.path) for m in sorted(route.methods) if m != "HEAD")
            elif hasattr(route, "original_router"):
                walk(route.original_router.routes, prefix + route.include_context.prefix)

    walk(client.app.routes, "")  # type: ignore[attr-defined]
    return found


def _concrete(path: str, job_id: int) -> str:
    return (
        path.replace("{job_id}", str(job_id))
        .replace("{name}", "liver-cls")
        .replace("{study}", "1.2.3")
    )


def test_every_route_has_a_declared_role(client: TestClient) -> None:
    routes = _routes(client)
    missing = [r for r in routes if r not in ROUTE_ROLES]
    assert missing == [], f"routes without a role in ROUTE_ROLES: {missing}"
    assert len(routes) >= len(ROUTE_ROLES) - 2  # the table names real routes


def test_every_route_with_each_role(client: TestClient, ctx: AgentContext) -> None:
    job_id, _ = processed_job(ctx)
    tokens = make_tokens(ctx)
    callers = {**{role: (role, tok) for role, tok in tokens.items()}}
    for method, path in _routes(client):
        required = ROUTE_ROLES[(method, path)]
        url = _concrete(path, job_id)
        if required is None:
            continue
        anonymous = client.request(method, url, follow_redirects=False)
        assert anonymous.status_code in (401, 303), (method, path, anonymous.status_code)
        for role, token in callers.values():
            response = client.request(
                method, url, headers={"Authorization": f"Bearer {token}"}, follow_redirects=False
            )
            if role.allows(required):
                assert response.status_code not in (401, 403), (method, path, role)
            else:
                assert response.status_code == 403, (method, path, role, response.status_code)
                assert f"'{required}'" in response.json()["detail"]
        shared = client.request(method, url, headers=AUTH, follow_redirects=False)
        assert shared.status_code not in (401, 403), (method, path, "shared token")


def test_a_viewer_cannot_switch_modes_nor_retry(client: TestClient, ctx: AgentContext) -> None:
    job_id, _ = processed_job(ctx)
    tokens = make_tokens(ctx)
    viewer = {"Authorization": f"Bearer {tokens[Role.VIEWER]}"}
    body = {"mode": "silent", "reason": "trial"}
    assert client.post("/api/models/m/mode", json=body, headers=viewer).status_code == 403
    assert client.post(f"/api/jobs/{job_id}/retry", headers=viewer).status_code == 403
    admin = {"Authorization": f"Bearer {tokens[Role.ADMIN]}"}
    switched = client.post("/api/models/m/mode", json=body, headers=admin)
    assert switched.status_code == 200
    assert switched.json()["actor"] == "api:dr-admin"


def test_tokens_are_stored_hashed_and_revoking_ends_them(
    client: TestClient, ctx: AgentContext
) -> None:
    tokens = make_tokens(ctx)
    with ctx.sessions() as session:
        rows = api_tokens.list_tokens(session)
    assert {r.name for r in rows} == {"dr-viewer", "dr-reader", "dr-admin"}
    for row in rows:
        assert row.token_sha256 == hash_token(tokens[Role(row.role)])
        assert tokens[Role(row.role)] not in (row.token_sha256, row.name)
    reader = {"Authorization": f"Bearer {tokens[Role.READER]}"}
    assert client.get("/api/jobs", headers=reader).status_code == 200
    # a web session of the same token
    login = client.post(
        "/login", data={"token": tokens[Role.READER], "next": "/"}, follow_redirects=False
    )
    assert login.status_code == 303
    cookie = login.cookies[COOKIE_NAME]
    assert cookie.startswith("n")
    assert tokens[Role.READER] not in cookie
    web = TestClient(client.app, base_url="http://127.0.0.1:8080")
    web.cookies.set(COOKIE_NAME, cookie)
    assert web.get("/models").status_code == 200
    with ctx.sessions.begin() as session:
        api_tokens.revoke_token(session, "dr-reader")
    assert client.get("/api/jobs", headers=reader).status_code == 401
    after = web.get("/models", follow_redirects=False)
    assert after.status_code == 303
    assert after.headers["location"].startswith("/login")


def test_a_forged_named_cookie_is_refused(client: TestClient, ctx: AgentContext) -> None:
    make_tokens(ctx)
    with ctx.sessions() as session:
        row = session.query(ApiToken).filter_by(name="dr-admin").one()
    forged = f"n{row.id}." + "0" * 64
    web = TestClient(client.app, base_url="http://127.0.0.1:8080")
    web.cookies.set(COOKIE_NAME, forged)
    assert web.get("/api/jobs").status_code == 401


def test_the_job_page_hides_admin_buttons_from_a_viewer(
    client: TestClient, ctx: AgentContext
) -> None:
    from storage.models import DeliveryStatus, JobStatus

    job_id, _ = processed_job(ctx, status=JobStatus.FAILED, delivery=DeliveryStatus.DEAD)
    tokens = make_tokens(ctx)
    viewer = client.get(
        f"/jobs/{job_id}", headers={"Authorization": f"Bearer {tokens[Role.VIEWER]}"}
    )
    assert viewer.status_code == 200
    assert f'action="/jobs/{job_id}/retry"' not in viewer.text
    admin = client.get(f"/jobs/{job_id}", headers=AUTH)
    assert f'action="/jobs/{job_id}/retry"' in admin.text


def test_cli_creates_lists_and_revokes_tokens(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"database:\n  url: sqlite:///{tmp_path / 'var' / 'db.sqlite'}\n"
        f"spool:\n  path: {tmp_path / 'spool'}\n"
    )
    runner = CliRunner()
    made = runner.invoke(
        cli_app, ["http", "token", "create", "dr-house", "--role", "reader", "-c", str(config)]
    )
    assert made.exit_code == 0, made.output
    token = next(line for line in made.output.splitlines() if re.fullmatch(r"la_\S{40,}", line))
    listed = runner.invoke(cli_app, ["http", "token", "list", "--json", "-c", str(config)])
    assert listed.exit_code == 0, listed.output
    items = json.loads(listed.stdout)
    assert [(i["name"], i["role"], i["revoked_at"]) for i in items] == [
        ("dr-house", "reader", None)
    ]
    assert token not in listed.output
    again = runner.invoke(
        cli_app, ["http", "token", "create", "dr-house", "--role", "admin", "-c", str(config)]
    )
    assert again.exit_code == 1
    assert "token_name_taken" in unwrapped(again.output)
    bad = runner.invoke(cli_app, ["http", "token", "create", "shared-token", "-c", str(config)])
    assert bad.exit_code == 1
    assert "token_name_invalid" in unwrapped(bad.output)
    revoked = runner.invoke(cli_app, ["http", "token", "revoke", "dr-house", "-c", str(config)])
    assert revoked.exit_code == 0, revoked.output
    listed = runner.invoke(cli_app, ["http", "token", "list", "--json", "-c", str(config)])
    assert json.loads(listed.stdout)[0]["revoked_at"] is not None
    missing = runner.invoke(cli_app, ["http", "token", "revoke", "nobody", "-c", str(config)])
    assert missing.exit_code == 1
    assert "token_not_found" in unwrapped(missing.output)
    # the shared token's command still works without a subcommand
    shared = runner.invoke(cli_app, ["http", "token", "--json", "-c", str(config)])
    assert shared.exit_code == 0, shared.output
    assert json.loads(shared.stdout)["source"] in ("file", "generated")


def test_an_admin_switches_a_mode_on_the_models_page(client: TestClient, ctx: AgentContext) -> None:
    tokens = make_tokens(ctx)
    reader = {"Authorization": f"Bearer {tokens[Role.READER]}"}
    assert 'action="/models/mode"' not in client.get("/models", headers=reader).text
    form = {"name": "liver-cls", "mode": "silent", "reason": "first month"}
    assert client.post("/models/mode", data=form, headers=reader).status_code == 403
    login = client.post("/login", data={"token": tokens[Role.ADMIN], "next": "/models"})
    assert login.status_code == 200
    page = client.get("/models")
    assert 'action="/models/mode"' not in page.text  # no model known yet: nothing to switch
    with ctx.sessions.begin() as session:
        from agent import deployment
        from agent.settings import DeploymentMode

        deployment.switch_mode(
            session, "liver-cls", DeploymentMode.LIVE, actor="test", reason="start"
        )
    assert 'action="/models/mode"' in client.get("/models").text
    sent = client.post("/models/mode", data=form, follow_redirects=False)
    assert sent.status_code == 303
    shown = client.get("/models")
    assert "liver-cls is silent now (by web:dr-admin)." in shown.text
    with ctx.sessions() as session:
        assert deployment.audit_trail(session)[0].actor == "web:dr-admin"
