"""No secret in what the agent prints: ``config check`` (text and JSON), the ``serve`` banner,
a failed STOW-RS delivery's reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agent.cli import app
from agent.cli.serve import start_banner
from agent.masking import mask_url_password
from agent.settings import load_settings

DB_PASSWORD = "db-Pa55word-x7"
STOW_PASSWORD = "stow-Pa55word-y8"
TOKEN = "bearer-token-z9-long-enough"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            f"postgresql+psycopg://agent:{DB_PASSWORD}@db:5432/liver",
            "postgresql+psycopg://agent:**********@db:5432/liver",
        ),
        (f"https://u:{STOW_PASSWORD}@pacs/dicom-web", "https://u:**********@pacs/dicom-web"),
        ("https://u:p@ss@pacs/x", "https://u:**********@pacs/x"),  # '@' in the password
        ("https://user@pacs/x", "https://user@pacs/x"),
        ("sqlite:///var/liver-agent.db", "sqlite:///var/liver-agent.db"),
        ("not a url", "not a url"),
    ],
)
def test_mask_url_password(url: str, masked: str) -> None:
    assert mask_url_password(url) == masked


def _config(tmp_path: Path) -> Path:
    data = {
        "database": {"url": f"postgresql+psycopg://agent:{DB_PASSWORD}@db.example:5432/liver"},
        "spool": {"path": str(tmp_path / "spool")},
        "http": {"enabled": False},
        "destinations": [
            {
                "name": "web",
                "stow_url": f"https://agent:{STOW_PASSWORD}@pacs.example/dicom-web",
                "route": "always",
            },
            {"name": "tok", "stow_url": "https://pacs.example/dw", "token": TOKEN},
        ],
    }
    path = tmp_path / "liver-agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("as_json", [False, True])
def test_config_check_masks_every_secret(tmp_path: Path, as_json: bool) -> None:
    args = ["config", "check", "--config", str(_config(tmp_path))]
    result = CliRunner().invoke(app, [*args, "--json"] if as_json else args)
    assert result.exit_code == 0, result.output
    for secret in (DB_PASSWORD, STOW_PASSWORD, TOKEN):
        assert secret not in result.output
    assert "agent:**********@db.example" in result.output
    assert "agent:**********@pacs.example" in result.output
    if as_json:
        data = json.loads(result.output)
        assert data["destinations"][1]["token"] == "**********"


def test_serve_banner_masks_the_database_password(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path))
    banner = start_banner(settings, 11112, None)
    assert DB_PASSWORD not in banner
    assert "agent:**********@db.example:5432/liver" in banner
