"""The compose file and the image agree: the agent service's image tag, build, ports, volumes,
settings file and health check are those of deploy/Dockerfile and deploy/build-image.sh."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, arguments = current.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    return instructions


def last(instructions: list[tuple[str, str]], keyword: str) -> str:
    values = [arguments for k, arguments in instructions if k == keyword]
    assert values, f"no {keyword} in the Dockerfile"
    return values[-1]


def image_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "ENV":
            for item in shlex.split(arguments):
                key, _, value = item.partition("=")
                env[key] = value
    return env


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DEPLOY / "Dockerfile")


@pytest.fixture(scope="module")
def agent_service() -> dict[str, Any]:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    service: dict[str, Any] = compose["services"]["agent"]
    service["_top_level_volumes"] = compose.get("volumes") or {}
    return service


def test_compose_builds_and_tags_the_image_build_image_sh_makes(
    agent_service: dict[str, Any],
) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert agent_service["image"] == f"liver-agent:{version}"
    script = (DEPLOY / "build-image.sh").read_text()
    assert "tag=${1:-liver-agent:$version}" in script  # the same default tag
    build = agent_service["build"]
    assert (DEPLOY / build["context"]).resolve() == REPO
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    labels = last(dockerfile_instructions(DEPLOY / "Dockerfile"), "LABEL")
    assert f'org.opencontainers.image.version="{version}"' in labels


def test_compose_ports_are_the_exposed_ones_and_the_settings_ones(
    dockerfile: list[tuple[str, str]],
    agent_service: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exposed = {int(p.split("/")[0]) for p in last(dockerfile, "EXPOSE").split()}
    published = {int(str(p).rsplit(":", 1)[1].split("/")[0]) for p in agent_service["ports"]}
    assert published == exposed
    monkeypatch.setenv("LIVER_AGENT__HTTP__TOKEN", "a-token-from-the-environment")
    settings = load_settings(DEPLOY / "compose" / "liver-agent.yaml")
    assert {settings.dicom.port, settings.http.port} == exposed
    example = load_settings(DEPLOY / "liver-agent.example.yaml")  # the image's own settings
    assert {example.dicom.port, example.http.port} == exposed
    assert example.dicom.host == "0.0.0.0"  # reachable through published ports
    assert image_env(dockerfile)["LIVER_AGENT__HTTP__HOST"] == "0.0.0.0"


def test_compose_volumes_hold_the_image_state_and_settings(
    dockerfile: list[tuple[str, str]], agent_service: dict[str, Any]
) -> None:
    declared = set(yaml.safe_load(last(dockerfile, "VOLUME")))  # a JSON array
    mounts = {m.split(":")[1]: m.split(":")[0] for m in agent_service["volumes"]}
    assert declared <= set(mounts)
    for target in declared:  # named volumes, declared at the top level
        assert mounts[target] in agent_service["_top_level_volumes"]
    env = image_env(dockerfile)
    assert last(dockerfile, "WORKDIR") == "/var/lib/liver-agent"
    assert last(dockerfile, "WORKDIR") in declared  # the database, spool and results
    assert f"{env['XDG_CACHE_HOME']}/liver-agent" in declared  # the DEMO bundles
    config = env["LIVER_AGENT_CONFIG"]
    assert agent_service["environment"]["LIVER_AGENT_CONFIG"] == config
    assert mounts[config] == "./compose/liver-agent.yaml"
    assert f"./compose/liver-agent.yaml:{config}:ro" in agent_service["volumes"]


def test_image_health_check_asks_readyz_and_compose_keeps_it(
    dockerfile: list[tuple[str, str]], agent_service: dict[str, Any]
) -> None:
    healthcheck = last(dockerfile, "HEALTHCHECK")
    assert re.search(r'CMD \["liver-agent", "health"', healthcheck)  # GET /readyz, with token
    assert "--start-period" in healthcheck
    assert last(dockerfile, "ENTRYPOINT") == '["liver-agent"]'
    assert last(dockerfile, "USER") == "liver-agent"
    # compose adds no health check of its own and does not switch the image's off
    assert "healthcheck" not in agent_service
    assert "LIVER_AGENT__HTTP__TOKEN" in agent_service["environment"]  # what health sends


def test_container_test_says_why_it_skips_where_podman_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.podman import missing_requirement

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no podman on the PATH
    reason = missing_requirement()
    assert reason is not None
    assert "podman is not installed" in reason
