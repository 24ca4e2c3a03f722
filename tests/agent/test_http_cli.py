"""CLI parity with the API: ``jobs list --from/--to``, ``jobs preview``, ``http token``,
``health`` (also against an in-process HTTP server), and the server's start checks."""

from __future__ import annotations

import datetime as dt
import json
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from PIL import Image
from typer.testing import CliRunner

from agent.cli import app
from agent.context import open_context
from agent.errors import HttpConfigError
from agent.http.server import HttpServer
from agent.settings import load_settings
from tests.agent.http_data import TOKEN, processed_job, queued_job


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, **groups: Any) -> Path:
    data: dict[str, Any] = {
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'liver-agent.db'}"},
        "spool": {"path": str(tmp_path / "var" / "spool"), "min_free_mb": 0},
        "results": {"path": str(tmp_path / "var" / "results")},
        "worker": {"threads": 0},
        "model": {"cache_dir": str(tmp_path / "cache")},
        "http": {"enabled": False, "token": TOKEN},
    }
    for key, value in groups.items():
        data[key] = {**data.get(key, {}), **value}
    path = tmp_path / "liver-agent.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_jobs_list_date_filters(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ctx = open_context(load_settings(config))
    try:
        day = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
        old, _ = queued_job(ctx, created_at=day, n=1)
        new, _ = queued_job(ctx, created_at=day + dt.timedelta(days=3), n=1)
    finally:
        ctx.engine.dispose()
    result = _run("jobs", "list", "--from", "2026-11-21", "--json", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert [j["id"] for j in json.loads(result.stdout)["jobs"]] == [new]
    result = _run("jobs", "list", "--to", "2026-11-20", "--json", "--config", str(config))
    assert [j["id"] for j in json.loads(result.stdout)["jobs"]] == [old]
    bad = _run("jobs", "list", "--from", "last week", "--config", str(config))
    assert bad.exit_code == 1
    assert "is not a date" in bad.output


def test_jobs_preview_writes_the_png(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ctx = open_context(load_settings(config))
    try:
        job_id, _ = processed_job(ctx)
        queued, _ = queued_job(ctx, n=1)
    finally:
        ctx.engine.dispose()
    out = tmp_path / "preview.png"
    result = _run("jobs", "preview", str(job_id), "--out", str(out), "--config", str(config))
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (512, 512)
    missing = _run("jobs", "preview", str(queued), "--out", str(out), "--config", str(config))
    assert missing.exit_code == 1
    assert "no result slice" in missing.output


def test_http_token_from_settings_and_from_the_generated_file(tmp_path: Path) -> None:
    with_token = _config(tmp_path)
    result = _run("http", "token", "--show", "--config", str(with_token))
    assert result.exit_code == 0
    assert result.stdout.strip() == TOKEN
    info = _run("http", "token", "--config", str(with_token))
    assert "from the settings" in info.stdout
    assert TOKEN not in info.stdout

    generated = _config(tmp_path / "b", http={"token": None})
    info = _run("http", "token", "--json", "--config", str(generated))
    assert info.exit_code == 0, info.output
    body = json.loads(info.stdout)
    token_path = Path(body["path"])
    assert body["source"] == "generated"
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    shown = _run("http", "token", "--show", "--config", str(generated))
    assert shown.stdout.strip() == token_path.read_text().strip()
    again = _run("http", "token", "--json", "--config", str(generated))
    assert json.loads(again.stdout)["source"] == "file"


def test_health_checks_database_and_spool(tmp_path: Path) -> None:
    config = _config(tmp_path)
    open_context(load_settings(config)).engine.dispose()  # migrate
    ok = _run("health", "--json", "--config", str(config))
    assert ok.exit_code == 0, ok.output
    assert {c["name"]: c["ok"] for c in json.loads(ok.stdout)["checks"]} == {
        "database": True,
        "spool": True,
    }
    short = _config(tmp_path, spool={"min_free_mb": 2**40})
    failing = _run("health", "--config", str(short))
    assert failing.exit_code == 1
    assert "not ready" in failing.stdout


def test_health_asks_the_running_agent(tmp_path: Path) -> None:
    port = _free_port()
    config = _config(tmp_path, http={"enabled": True, "port": port})
    unreachable = _run("health", "--json", "--config", str(config))
    assert unreachable.exit_code == 1
    agent = next(c for c in json.loads(unreachable.stdout)["checks"] if c["name"] == "agent")
    assert agent["ok"] is False
    assert "not reachable" in agent["detail"]

    ctx = open_context(load_settings(config))
    server = HttpServer(ctx)
    server.start()
    try:
        assert server.port == port
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        result = _run("health", "--json", "--config", str(config))
        assert result.exit_code == 0, result.output
        checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
        assert checks["agent"]["ok"] is True
        assert checks["agent models"]["detail"] == "not needed: worker.threads is 0"
        # a second server on the same port fails at construction with the reason
        with pytest.raises(HttpConfigError, match="cannot listen"):
            HttpServer(ctx)
    finally:
        server.stop()
        ctx.engine.dispose()
