"""Owner-only files: the database, the spool and the token file; one token rule for
``config check`` and ``serve``."""

from __future__ import annotations

import stat
from io import BytesIO
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from agent.cli import app
from agent.context import open_context
from agent.errors import HttpConfigError
from agent.http.auth import TokenChecker
from agent.settings import Settings, load_settings
from agent.tokens import resolve_token, token_file
from tests.factory import mr_dataset


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _settings(tmp_path: Path, **http: object) -> Settings:
    return load_settings(
        None,
        database={"url": f"sqlite:///{tmp_path / 'var' / 'liver-agent.db'}"},
        spool={"path": tmp_path / "var" / "spool", "min_free_mb": 0},
        http={"enabled": False, **http},
    )


def test_database_and_spool_are_owner_only(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ctx = open_context(settings)
    try:
        buffer = BytesIO()
        mr_dataset(study_uid=generate_uid(), series_uid=generate_uid()).save_as(
            buffer, enforce_file_format=True
        )
        ctx.ingestor.store(buffer.getvalue(), association_id=None, source_ae="PACS")
        var = tmp_path / "var"
        database = var / "liver-agent.db"
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            assert _mode(path) == 0o600, (path.name, oct(_mode(path)))
        spool = var / "spool"
        assert _mode(spool) == 0o700
        (instance,) = spool.rglob("*.dcm")
        assert _mode(instance) == 0o600
        for folder in (instance.parent, instance.parent.parent):
            assert _mode(folder) == 0o700, (folder, oct(_mode(folder)))
    finally:
        ctx.ingestor.close()
        ctx.engine.dispose()


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = token_file(settings)
    path.parent.mkdir(parents=True)
    path.write_text("a-token-that-is-long-enough\n")
    path.chmod(0o644)
    with pytest.raises(HttpConfigError) as caught:
        resolve_token(settings)
    assert caught.value.code == "http_token_file_insecure"
    assert f"chmod 600 {path}" in caught.value.message
    path.chmod(0o600)
    resolved = resolve_token(settings)
    assert resolved is not None
    assert resolved.value == "a-token-that-is-long-enough"


def test_generated_token_file_is_owner_only(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    resolved = resolve_token(settings)
    assert resolved is not None
    assert resolved.path is not None
    assert _mode(resolved.path) == 0o600


@pytest.mark.parametrize("token", ["short", "       x", "1234567"])
def test_config_check_and_serve_agree_on_a_short_token(tmp_path: Path, token: str) -> None:
    with pytest.raises(HttpConfigError):
        TokenChecker(token)
    with pytest.raises(ValidationError, match="at least 8 characters"):
        _settings(tmp_path, token=token)
    config = tmp_path / "liver-agent.yaml"
    config.write_text(yaml.safe_dump({"http": {"token": token}}))
    result = CliRunner().invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2
    assert "at least 8 characters" in result.output


def test_a_long_enough_token_is_valid_for_both(tmp_path: Path) -> None:
    TokenChecker("12345678")
    _settings(tmp_path, token="12345678")
