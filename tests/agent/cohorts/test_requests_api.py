"""``POST /api/requests`` refusals that need no archive: the token, an unknown source, none
configured, and a source that does not answer (a closed port)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent.context import AgentContext, open_context
from agent.http.app import create_app
from agent.retrieve.fetch import parse_requested
from tests.agent.http_data import AUTH, settings_for
from tests.integration.processes import free_port


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    closed = free_port()  # nothing listens there
    sources = [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": closed}]
    context = open_context(settings_for(tmp_path, sources=sources))
    yield context
    context.ingestor.close()
    context.engine.dispose()


def test_request_refusals(ctx: AgentContext) -> None:
    client = TestClient(create_app(ctx))
    assert client.post("/api/requests", json={"study": "A1"}).status_code == 401
    client.headers.update(AUTH)
    unknown = client.post("/api/requests", json={"study": "A1", "source": "nope"})
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_source"
    assert "pacs" in unknown.json()["detail"]
    down = client.post("/api/requests", json={"study": "A1"})  # the only source is taken
    assert down.status_code == 502
    assert down.json()["code"] == "source_unreachable"
    assert client.post("/api/requests", json={"study": ""}).status_code == 422


def test_what_a_user_typed_is_an_accession_or_a_uid() -> None:
    assert parse_requested("1.2.840.113619.2.55") == "study:1.2.840.113619.2.55"
    assert parse_requested(" ACC-2026-01 ") == "accession:ACC-2026-01"
    assert parse_requested("12345") == "accession:12345"
    assert parse_requested("study:1.2.3") == "study:1.2.3"
