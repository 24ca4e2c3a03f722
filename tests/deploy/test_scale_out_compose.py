"""deploy/compose.scale-out.yaml: PostgreSQL, Orthanc, one receiver and two workers that share
the database and one volume for the spool and results, and whose settings load in each role."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.settings import AgentRole, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.scale-out.yaml"


@pytest.fixture
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merges the x-agent anchor
    return data


def _role(service: dict[str, Any]) -> str:
    command = service["command"]
    assert command[:2] == ["serve", "--role"]
    return str(command[2])


def test_services_and_roles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "orthanc", "receiver", "worker"}
    assert _role(services["receiver"]) == AgentRole.RECEIVER
    assert _role(services["worker"]) == AgentRole.WORKER
    assert services["worker"]["deploy"]["replicas"] == 2
    assert "ports" not in services["worker"]  # workers listen for no one outside
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"


def test_agents_share_the_database_and_the_spool(compose: dict[str, Any]) -> None:
    receiver, worker = compose["services"]["receiver"], compose["services"]["worker"]
    for agent in (receiver, worker):
        assert agent["depends_on"]["postgres"]["condition"] == "service_healthy"
        url = agent["environment"]["LIVER_AGENT__DATABASE__URL"]
        assert url.startswith("postgresql+psycopg://liveragent:")
        assert url.endswith("@postgres/liveragent")
        assert "shared-data:/var/lib/liver-agent/var" in agent["volumes"]
    assert "shared-data" in compose["volumes"]


def test_orthanc_reaches_the_receiver(compose: dict[str, Any]) -> None:
    orthanc = json.loads((DEPLOY / "compose" / "orthanc.json").read_text())
    _ae, host, port = orthanc["DicomModalities"]["liveragent"]
    receiver = compose["services"]["receiver"]
    assert host in receiver["networks"]["default"]["aliases"]
    assert f"127.0.0.1:{port}:{port}" in receiver["ports"]


@pytest.mark.parametrize("role", [AgentRole.RECEIVER, AgentRole.WORKER])
def test_each_role_loads_its_settings(
    compose: dict[str, Any], role: AgentRole, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings each container reads (the mounted file and its environment, with the
    compose variables filled in) are valid, with PostgreSQL as the database; the spool and
    results folders (relative to the working directory) lie in the shared volume."""
    service = compose["services"][str(role)]
    for name, value in service["environment"].items():
        filled = (
            str(value)
            .replace("${LIVER_AGENT_TOKEN:?set LIVER_AGENT_TOKEN in deploy/.env}", "a-long-token")
            .replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in deploy/.env}", "pw")
        )
        assert "${" not in filled
        monkeypatch.setenv(name, filled)
    settings = load_settings(DEPLOY / "compose" / "liver-agent.yaml")
    assert settings.database.url == "postgresql+psycopg://liveragent:pw@postgres/liveragent"
    workdir = Path("/var/lib/liver-agent")  # the image's WORKDIR
    for folder in (settings.spool.path, settings.results.path):
        assert (workdir / folder).is_relative_to(workdir / "var")
