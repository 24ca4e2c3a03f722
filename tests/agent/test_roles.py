"""Agent roles: a worker refuses STOW-RS (receivers take instances) but serves the API; a
receiver runs no job workers; ``all`` runs both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from agent.context import open_context
from agent.http.app import create_app
from agent.service import AgentService
from agent.settings import AgentRole
from tests.agent.http_data import AUTH, mr_series, part10, settings_for
from tests.agent.test_http_stow import STOW_TYPE, multipart


@pytest.fixture
def worker_client(tmp_path: Path) -> Iterator[TestClient]:
    ctx = open_context(settings_for(tmp_path, cluster={"role": "worker"}))
    yield TestClient(create_app(ctx), headers=AUTH)
    ctx.engine.dispose()


def test_a_worker_refuses_stow_but_serves_the_api(worker_client: TestClient) -> None:
    datasets, _ = mr_series(generate_uid(), 1, rows=16)
    body = multipart([("application/dicom", part10(datasets[0]))])
    response = worker_client.post(
        "/dicomweb/studies", content=body, headers={"Content-Type": STOW_TYPE}
    )
    assert response.status_code == 503
    assert "receiver" in response.json()["detail"]
    assert worker_client.get("/api/jobs").status_code == 200


@pytest.mark.parametrize(
    ("role", "receives", "works"),
    [
        (AgentRole.ALL, True, True),
        (AgentRole.RECEIVER, True, False),
        (AgentRole.WORKER, False, True),
    ],
)
def test_what_each_role_runs(tmp_path: Path, role: AgentRole, receives: bool, works: bool) -> None:
    service = AgentService(settings_for(tmp_path, cluster={"role": role}, http={"enabled": False}))
    try:
        assert (service.receives, service.works) == (receives, works)
        assert service.shared is (role != AgentRole.ALL)  # SQLite: shared only when split in roles
    finally:
        service.ctx.ingestor.close()
        service.ctx.engine.dispose()
