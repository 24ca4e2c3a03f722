"""Deployment modes: a silent model's job runs through the real worker and keeps its outputs,
sends nothing to a real DCMTK storescp and ends done with ``silent_mode``; switched live, the
next job is delivered. Switches are audited (who, when, why) from the CLI and the HTTP API."""

from __future__ import annotations

import getpass
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from agent import deployment
from agent.cli import app as cli_app
from agent.context import AgentContext, open_context
from agent.delivery import Deliverer
from agent.http.app import create_app
from agent.jobs import lifecycle
from agent.settings import DeploymentMode, load_settings
from agent.worker import Worker
from pipeline.phantoms import PhantomStudy
from pipeline.run import Models
from storage.models import EventKind, Job, JobStatus
from tests.agent.http_data import AUTH, complete, ingest, settings_for
from tests.agent.test_delivery import StoreSCP
from tests.bundles import write_test_bundles
from tests.cli_output import unwrapped
from tests.integration.processes import free_port
from tests.integration.truth_agent import files_of, truth_load, truth_phantom

SEG_NAME = "test-segmentation-untrained"
CLS_NAME = "test-classification-untrained"


@pytest.fixture
def truth_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The phantoms' true liver masks stand in for the untrained segmentation network (which
    finds no liver); the bundles are loaded and the classifier runs as in production."""
    masks = tmp_path / "masks"
    monkeypatch.setattr(Models, "load", truth_load(masks))
    return masks


def _job_of(ctx: AgentContext, study: PhantomStudy) -> int:
    ingest(ctx, [dcmread(f) for f in files_of(study)])
    return complete(ctx, study.study_instance_uid)


def _load(ctx: AgentContext, job_id: int) -> Job:
    with ctx.sessions() as session:
        job = session.get_one(Job, job_id)
        _ = job.outputs, job.deliveries, job.events
        for delivery in job.deliveries:
            _ = delivery.items
        return job


@pytest.mark.integration  # starts DCMTK storescp
def test_silent_job_keeps_its_outputs_sends_nothing_then_live_delivers(
    tmp_path: Path, truth_masks: Path
) -> None:
    first = truth_phantom(tmp_path / "s1", truth_masks, seed=3, roles=("ax_t2",))
    second = truth_phantom(tmp_path / "s2", truth_masks, seed=4, roles=("ax_t2",))
    seg, cls = write_test_bundles(tmp_path / "bundles")
    port = free_port()
    settings = settings_for(
        tmp_path,
        model={"segmentation": seg, "classification": cls, "device": "cpu"},
        destinations=[
            {
                "name": "pacs",
                "ae_title": "DEST",
                "host": "127.0.0.1",
                "port": port,
                "route": "always",
                "send": {"seg": True, "sr": True, "sc": True},
            }
        ],
        delivery={"retry_seconds": [0.0], "poll_seconds": 0.1},
    )
    ctx = open_context(settings)
    scp = StoreSCP(tmp_path / "received", port)
    scp.start()
    try:
        ctx.models.get(timeout=300)
        worker = Worker(
            settings, ctx.sessions, ctx.spool, ctx.models, ctx.metrics, threading.Event(), "w1"
        )
        deliverer = Deliverer(settings, ctx.sessions, ctx.metrics)
        with ctx.sessions.begin() as session:
            deployment.switch_mode(
                session, CLS_NAME, DeploymentMode.SILENT, actor="test:x", reason="validation"
            )

        silent_id = _job_of(ctx, first)
        assert worker.run_one()
        job = _load(ctx, silent_id)
        assert job.status == JobStatus.DONE
        assert job.evaluated is True
        assert job.reason_code == "silent_mode"
        assert job.reason is not None
        assert "test:x" in job.reason
        assert "validation" in job.reason
        assert sorted(o.kind for o in job.outputs) == ["sc", "seg", "sr"]
        assert all(o.path is not None and Path(o.path).is_file() for o in job.outputs)
        assert job.deliveries == []
        assert [e for e in job.events if e.kind == EventKind.SILENT_MODE]
        assert deliverer.deliver_due() == 0
        time.sleep(0.5)  # a delivery poll or more: nothing may arrive
        assert scp.received() == []

        client = TestClient(create_app(ctx), headers=AUTH)
        page = client.get(f"/jobs/{silent_id}")
        assert page.status_code == 200
        assert "SILENT MODE: not sent to the PACS." in page.text
        assert "validation" in page.text
        assert 'class="silent-tag"' in client.get("/").text
        api = client.get(f"/api/jobs/{silent_id}").json()
        assert api["details"]["deployment"]["sent"] is False
        assert len(api["outputs"]) == 3

        with ctx.sessions.begin() as session:
            deployment.switch_mode(
                session, CLS_NAME, DeploymentMode.LIVE, actor="test:x", reason="validated"
            )
        live_id = _job_of(ctx, second)
        assert worker.run_one()
        assert _load(ctx, live_id).status == JobStatus.DELIVERING
        assert deliverer.deliver_due() == 1
        job = _load(ctx, live_id)
        assert job.status == JobStatus.DONE
        assert job.reason_code is None
        assert len(job.deliveries) == 1
        received = {str(dcmread(p).SOPInstanceUID) for p in scp.received()}
        assert received == {o.sop_instance_uid for o in job.outputs}
        assert _load(ctx, silent_id).status == JobStatus.DONE  # the silent one stays unsent

        # retried now that the model is live, the silent job runs again and is sent
        with ctx.sessions.begin() as session:
            assert lifecycle.retry(session, silent_id) == "job re-queued"
        assert worker.run_one()
        assert deliverer.deliver_due() == 1
        job = _load(ctx, silent_id)
        assert job.status == JobStatus.DONE
        assert job.reason_code is None
        (delivery,) = job.deliveries
        assert len(scp.received()) == len(received) + len(delivery.items)
    finally:
        scp.stop()
        ctx.ingestor.close()
        ctx.engine.dispose()


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    context = open_context(
        settings_for(tmp_path, model={"mode": "live", "modes": {"bundle-b": "silent"}})
    )
    yield context
    context.ingestor.close()
    context.engine.dispose()


def test_a_switch_wins_over_the_settings_and_a_pair_is_silent_if_either_is(
    ctx: AgentContext,
) -> None:
    model = ctx.settings.model
    with ctx.sessions.begin() as session:
        modes = deployment.modes_of(session, model, ["bundle-a", "bundle-b"])
        assert (modes["bundle-a"].mode, modes["bundle-a"].source) == ("live", "default")
        assert (modes["bundle-b"].mode, modes["bundle-b"].source) == ("silent", "settings")
        assert deployment.silent_reason(session, model, ["bundle-a"]) is None
        reason = deployment.silent_reason(session, model, ["bundle-a", "bundle-b"])
        assert reason is not None
        assert "bundle-b" in reason
        assert "model.modes" in reason
        deployment.switch_mode(session, "bundle-b", DeploymentMode.LIVE, actor="t", reason="ok")
        assert deployment.silent_reason(session, model, ["bundle-a", "bundle-b"]) is None
        deployment.switch_mode(session, "bundle-a", DeploymentMode.SILENT, actor="t", reason="r")
        assert deployment.modes_of(session, model, ["bundle-a"])["bundle-a"].source == "switch"
        with pytest.raises(deployment.ModeSwitchError) as err:
            deployment.switch_mode(session, "bundle-a", DeploymentMode.LIVE, actor="t", reason=" ")
        assert err.value.code == "reason_required"


def test_the_audit_trail_is_append_only(ctx: AgentContext) -> None:
    with ctx.sessions.begin() as session:
        deployment.switch_mode(session, "m", DeploymentMode.SILENT, actor="t", reason="why")
    for statement in (
        "UPDATE model_mode_changes SET actor = 'x'",
        "DELETE FROM model_mode_changes",
    ):
        with pytest.raises(DBAPIError, match="append-only"), ctx.engine.begin() as conn:
            conn.execute(text(statement))
    with ctx.sessions() as session:
        (change,) = deployment.audit_trail(session)
    assert (change.actor, change.reason) == ("t", "why")


def test_api_switch_records_the_caller_and_lists_models_and_the_trail(ctx: AgentContext) -> None:
    client = TestClient(create_app(ctx), headers=AUTH)
    response = client.post(
        "/api/models/bundle-a/mode", json={"mode": "silent", "reason": "site validation"}
    )
    assert response.status_code == 200, response.text
    change = response.json()
    assert (change["model_name"], change["mode"], change["actor"]) == (
        "bundle-a",
        "silent",
        "api:token",
    )
    body = client.get("/api/models").json()
    assert body["default_mode"] == "live"
    models = {m["name"]: m for m in body["models"]}
    assert models["bundle-a"]["mode"] == "silent"
    assert models["bundle-a"]["mode_source"] == "switch"
    assert models["bundle-a"]["changed_by"] == "api:token"
    assert models["bundle-a"]["change_reason"] == "site validation"
    assert (models["bundle-b"]["mode"], models["bundle-b"]["mode_source"]) == ("silent", "settings")
    (entry,) = body["audit"]
    assert entry["reason"] == "site validation"
    assert entry["at"] == change["at"]

    page = client.get("/models")
    assert page.status_code == 200
    assert 'data-model="bundle-a" data-mode="silent"' in page.text
    assert "site validation" in page.text


def test_a_switch_from_a_logged_in_browser_is_recorded_as_the_web_session(
    ctx: AgentContext,
) -> None:
    from tests.agent.http_data import TOKEN

    client = TestClient(create_app(ctx))
    login = client.post("/login", data={"token": TOKEN, "next": "/models"}, follow_redirects=False)
    assert login.status_code == 303
    response = client.post("/api/models/bundle-a/mode", json={"mode": "silent", "reason": "r"})
    assert response.status_code == 200, response.text
    assert response.json()["actor"] == "web:session"
    foreign = client.post(
        "/api/models/bundle-a/mode",
        json={"mode": "live", "reason": "r"},
        headers={"Origin": "http://evil.example"},
    )
    assert foreign.status_code == 403
    with ctx.sessions() as session:
        assert [c.actor for c in deployment.audit_trail(session)] == ["web:session"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-wrong-token-x"}])
def test_api_refuses_callers_without_the_token(ctx: AgentContext, headers: dict[str, str]) -> None:
    client = TestClient(create_app(ctx), headers=headers)
    post = client.post("/api/models/bundle-a/mode", json={"mode": "silent", "reason": "x"})
    assert post.status_code == 401
    assert client.get("/api/models").status_code == 401
    with ctx.sessions() as session:
        assert deployment.audit_trail(session) == []


def test_api_refuses_a_switch_without_a_reason_or_mode(ctx: AgentContext) -> None:
    client = TestClient(create_app(ctx), headers=AUTH)
    for body in (
        {"mode": "silent"},
        {"mode": "silent", "reason": ""},
        {"mode": "off", "reason": "x"},
    ):
        assert client.post("/api/models/bundle-a/mode", json=body).status_code == 422
    response = client.post("/api/models/bundle-a/mode", json={"mode": "silent", "reason": "  "})
    assert response.status_code == 422
    assert response.json()["code"] == "reason_required"
    with ctx.sessions() as session:
        assert deployment.audit_trail(session) == []


def test_cli_switch_records_the_unix_user(tmp_path: Path) -> None:
    import yaml

    config = tmp_path / "liver-agent.yaml"
    data: dict[str, Any] = {
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'db.sqlite'}"},
        "spool": {"path": str(tmp_path / "spool")},
        "model": {"cache_dir": str(tmp_path / "cache")},
    }
    config.write_text(yaml.safe_dump(data))
    runner = CliRunner()
    result = runner.invoke(
        cli_app,
        ["model", "mode", "bundle-a", "silent", "--reason", "first month", "--config", str(config)],
    )
    assert result.exit_code == 0, result.output
    assert f"bundle-a: silent (by cli:{getpass.getuser()}" in unwrapped(result.output)
    refused = runner.invoke(
        cli_app, ["model", "mode", "bundle-a", "live", "--reason", "", "--config", str(config)]
    )
    assert refused.exit_code == 1
    listed = runner.invoke(cli_app, ["model", "modes", "--json", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    body = yaml.safe_load(listed.stdout)
    assert body["models"] == [{"name": "bundle-a", "mode": "silent", "source": "switch"}]
    (entry,) = body["audit"]
    assert (entry["actor"], entry["reason"]) == (f"cli:{getpass.getuser()}", "first month")
    ctx = open_context(load_settings(config))
    try:
        with ctx.sessions() as session:
            assert (
                deployment.modes_of(session, ctx.settings.model, ["bundle-a"])["bundle-a"].mode
                == DeploymentMode.SILENT
            )
    finally:
        ctx.ingestor.close()
        ctx.engine.dispose()


def test_a_silent_unevaluated_job_keeps_its_reason_and_its_sr_unsent(tmp_path: Path) -> None:
    from tests.agent.test_delivery import _job_with_result, _settings

    context = open_context(_settings(tmp_path, free_port(), model={"mode": "silent"}))
    try:
        job_id = _job_with_result(context, evaluated=False)
        job = _load(context, job_id)
        assert job.status == JobStatus.NOT_EVALUATED
        assert job.reason_code == "no_axial_t2"  # the pipeline's reason stays the job's
        assert [o.kind for o in job.outputs] == ["not_evaluated_sr"]
        assert job.deliveries == []
        (event,) = [e for e in job.events if e.kind == EventKind.SILENT_MODE]
        assert "model.mode" in event.message
        assert job.details is not None
        assert job.details["deployment"]["sent"] is False
    finally:
        context.ingestor.close()
        context.engine.dispose()
