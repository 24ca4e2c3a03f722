"""The HTTP token: where it comes from, what it protects, the web login and its cookie."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from agent.context import AgentContext, open_context
from agent.errors import HttpConfigError
from agent.http.app import create_app
from agent.http.auth import COOKIE_NAME, TokenChecker
from agent.settings import HttpSettings, Settings
from agent.tokens import (
    TokenSource,
    check_exposure,
    is_loopback,
    resolve_token,
    token_file,
)
from tests.agent.http_data import AUTH, TOKEN, queued_job, settings_for


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    context = open_context(settings_for(tmp_path))
    yield context
    context.engine.dispose()


@pytest.fixture
def client(ctx: AgentContext) -> TestClient:
    return TestClient(create_app(ctx), base_url="http://127.0.0.1:8080")


PROTECTED_GETS = [
    "/api/jobs",
    "/api/jobs/1",
    "/api/jobs/1/preview.png",
    "/api/studies",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/fragments/jobs",
]


@pytest.mark.parametrize("path", PROTECTED_GETS)
def test_routes_refuse_requests_without_the_token(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    wrong = client.get(path, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    basic = client.get(path, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401


@pytest.mark.parametrize(
    "path", ["/api/jobs/1/retry", "/api/jobs/1/cancel", "/dicomweb/studies", "/jobs/1/retry"]
)
def test_writes_refuse_requests_without_the_token(client: TestClient, path: str) -> None:
    response = client.post(path, follow_redirects=False)
    assert response.status_code in (401, 303)
    if response.status_code == 303:  # web form: to the login page, nothing done
        assert response.headers["location"].startswith("/login")


def test_with_the_token_the_api_answers(client: TestClient, ctx: AgentContext) -> None:
    job_id, _ = queued_job(ctx)
    response = client.get("/api/jobs", headers=AUTH)
    assert response.status_code == 200
    assert [j["id"] for j in response.json()["jobs"]] == [job_id]
    lower = client.get("/api/jobs", headers={"Authorization": f"bearer {TOKEN}"})
    assert lower.status_code == 200


def test_healthz_needs_no_token(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_document_lists_the_api_behind_the_token(client: TestClient) -> None:
    paths = client.get("/openapi.json", headers=AUTH).json()["paths"]
    for path in ("/api/jobs", "/api/jobs/{job_id}/retry", "/dicomweb/studies", "/metrics"):
        assert path in paths
    assert "/login" not in paths
    assert client.get("/docs").status_code == 404  # Swagger UI would need a CDN


def test_web_login_sets_an_httponly_strict_cookie_without_the_token(client: TestClient) -> None:
    page = client.get("/jobs/1", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fjobs%2F1"
    form = client.get("/login?next=/jobs/1")
    assert form.status_code == 200
    assert 'name="token"' in form.text
    assert "default-src 'self'" in form.headers["content-security-policy"]

    refused = client.post(
        "/login",
        content=b"token=wrong&next=%2F",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert refused.status_code == 401
    assert COOKIE_NAME not in refused.cookies

    response = client.post(
        "/login",
        content=f"token={TOKEN}&next=%2Fstudies".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/studies"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    # the client keeps the cookie: pages and the API now answer without a header
    assert client.get("/studies").status_code == 200
    assert client.get("/api/jobs").status_code == 200
    client.post("/logout")
    assert client.get("/api/jobs").status_code == 401


def test_login_does_not_redirect_off_site(client: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil"):
        response = client.post(
            "/login",
            data={"token": TOKEN, "next": target},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/"


def test_cookie_writes_from_another_origin_are_refused(
    client: TestClient, ctx: AgentContext
) -> None:
    job_id, _ = queued_job(ctx)
    client.cookies.set(COOKIE_NAME, TokenChecker(TOKEN).session_value())
    cross = client.post(f"/api/jobs/{job_id}/cancel", headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    same = client.post(f"/api/jobs/{job_id}/cancel", headers={"Origin": "http://127.0.0.1:8080"})
    assert same.status_code == 200
    assert same.json()["status"] == "cancelled"


def test_generated_token_file_is_private_and_reused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, http={"token": None})
    assert resolve_token(settings, create=False) is None
    first = resolve_token(settings)
    assert first is not None
    assert first.source is TokenSource.GENERATED
    assert first.path == token_file(settings) == tmp_path / "var" / "http-token"
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert len(first.value) >= 32
    second = resolve_token(settings)
    assert second is not None
    assert second.source is TokenSource.FILE
    assert second.value == first.value


def test_app_without_settings_token_uses_the_file(tmp_path: Path) -> None:
    ctx = open_context(settings_for(tmp_path, http={"token": None}))
    try:
        client = TestClient(create_app(ctx))
        value = (tmp_path / "var" / "http-token").read_text().strip()
        assert client.get("/api/jobs").status_code == 401
        assert (
            client.get("/api/jobs", headers={"Authorization": f"Bearer {value}"}).status_code == 200
        )
    finally:
        ctx.engine.dispose()


def test_settings_token_wins_over_the_file(tmp_path: Path) -> None:
    resolved = resolve_token(settings_for(tmp_path))
    assert resolved is not None
    assert resolved.source is TokenSource.SETTINGS
    assert resolved.value == TOKEN
    assert not (tmp_path / "var" / "http-token").exists()


def test_non_loopback_without_token_is_refused() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("10.1.2.3")
    assert not is_loopback("pacs")
    with pytest.raises(HttpConfigError, match="LIVER_AGENT__HTTP__TOKEN"):
        check_exposure(HttpSettings(host="127.0.0.1").model_copy(update={"host": "0.0.0.0"}))
    with pytest.raises(ValidationError, match=r"no http\.token is set"):
        Settings(http={"host": "0.0.0.0"})
    assert Settings(http={"host": "0.0.0.0", "token": TOKEN}).http.host == "0.0.0.0"
    assert Settings(http={"host": "0.0.0.0", "enabled": False}).http.enabled is False


def test_short_tokens_are_refused() -> None:
    with pytest.raises(HttpConfigError, match="at least 8"):
        TokenChecker("short")
