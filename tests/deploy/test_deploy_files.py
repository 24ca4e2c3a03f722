"""The deployment files agree with each other and with the agent: the compose settings load,
Orthanc's modality points at the agent's AE title and port, the systemd unit is well formed."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_compose_settings_load_and_match_orthanc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVER_AGENT__HTTP__TOKEN", "a-token-from-the-environment")
    settings = load_settings(DEPLOY / "compose" / "liver-agent.yaml")
    orthanc = json.loads((DEPLOY / "compose" / "orthanc.json").read_text())
    ae_title, host, port = orthanc["DicomModalities"]["liveragent"]
    assert (ae_title, port) == (settings.dicom.ae_title, settings.dicom.port)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert host in compose["services"]  # the agent's service name on the compose network
    (destination,) = settings.destinations
    assert destination.ae_title == orthanc["DicomAet"]
    assert destination.host in compose["services"]
    assert destination.port == orthanc["DicomPort"]
    assert [c.ae_title for c in settings.dicom.allowed_callers] == [orthanc["DicomAet"]]
    assert "/etc/orthanc/route-liver.lua" in orthanc["LuaScripts"]
    assert "LiverAgentSent" in orthanc["UserMetadata"]  # the name route-liver.lua uses
    assert "'LiverAgentSent'" in (DEPLOY / "orthanc" / "route-liver.lua").read_text()


def test_compose_settings_refuse_to_start_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVER_AGENT__HTTP__TOKEN", raising=False)
    with pytest.raises(ValueError, match="token"):
        load_settings(DEPLOY / "compose" / "liver-agent.yaml")


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "liver-agent.service")
    service = unit["Service"]
    assert service["ExecStart"].split()[1:] == [
        "serve",
        "--config",
        "/etc/liver-agent/liver-agent.yaml",
    ]
    assert service["WorkingDirectory"] == "/var/lib/liver-agent"
    assert service["StateDirectory"] == "liver-agent"  # creates the working directory
    assert service["Restart"] == "on-failure"
    assert service["User"] == "liver-agent"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # the full check where systemd's tools are installed
        result = subprocess.run(
            [analyze, "verify", str(DEPLOY / "liver-agent.service")],
            capture_output=True,
            text=True,
            check=False,
        )
        problems = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if line.strip() and "is not executable" not in line  # /opt/... is not installed here
        ]
        assert problems == []
