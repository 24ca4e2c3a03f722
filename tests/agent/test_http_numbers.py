"""Numbers too large for a database integer are a client error (404 or 422), never a 500, on
every route that takes a job id, a limit or an offset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent.context import AgentContext, open_context
from agent.http.app import create_app
from tests.agent.http_data import AUTH, processed_job, settings_for

HUGE = ["1e20", "99999999999999999999", "9223372036854775808", "-99999999999999999999"]

ID_ROUTES = [
    ("GET", "/api/jobs/{n}"),
    ("POST", "/api/jobs/{n}/retry"),
    ("POST", "/api/jobs/{n}/cancel"),
    ("GET", "/api/jobs/{n}/preview.png"),
    ("GET", "/jobs/{n}"),
    ("POST", "/jobs/{n}/retry"),
    ("POST", "/jobs/{n}/cancel"),
    ("GET", "/fragments/jobs/{n}"),
]
PAGED_ROUTES = ["/api/jobs", "/api/studies", "/", "/fragments/jobs", "/studies"]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    ctx: AgentContext = open_context(settings_for(tmp_path))
    processed_job(ctx)  # one real job, so that the queries run against rows
    yield TestClient(create_app(ctx), headers=AUTH, raise_server_exceptions=False)
    ctx.engine.dispose()


@pytest.mark.parametrize("number", HUGE)
@pytest.mark.parametrize(("method", "route"), ID_ROUTES)
def test_huge_job_id_is_404_or_422(
    client: TestClient, method: str, route: str, number: str
) -> None:
    response = client.request(method, route.format(n=number), follow_redirects=False)
    assert response.status_code in (404, 422), (response.status_code, response.text[:300])


@pytest.mark.parametrize("number", HUGE)
@pytest.mark.parametrize(
    ("route", "param"),
    # the studies page has a fixed page size: no limit
    [(r, p) for r in PAGED_ROUTES for p in ("offset", "limit") if (r, p) != ("/studies", "limit")],
)
def test_huge_offset_or_limit_is_422(
    client: TestClient, route: str, param: str, number: str
) -> None:
    response = client.get(route, params={param: number})
    assert response.status_code == 422, (response.status_code, response.text[:300])


@pytest.mark.parametrize("route", PAGED_ROUTES)
def test_ordinary_paging_still_works(client: TestClient, route: str) -> None:
    assert client.get(route, params={"offset": 0, "limit": 25}).status_code == 200
