"""storescu -> liver-agent serve (models silent by the settings) -> storescp: the silent job's
results stay in the agent; switched live through the HTTP API and the CLI, the next study's
results reach the storescp."""

from __future__ import annotations

import getpass
import time
from pathlib import Path

import pytest
import requests
from pydicom import dcmread

from tests.agent.test_delivery import StoreSCP
from tests.bundles import write_test_bundles
from tests.integration.processes import free_port, storescu
from tests.integration.truth_agent import files_of, running_truth_agent, truth_phantom

pytestmark = pytest.mark.integration

SEG_NAME = "test-segmentation-untrained"
CLS_NAME = "test-classification-untrained"


def test_silent_by_settings_sends_nothing_and_switching_live_sends_the_next_study(
    tmp_path: Path,
) -> None:
    masks = tmp_path / "masks"
    first = truth_phantom(tmp_path / "s1", masks, seed=5, roles=("ax_t2",))
    second = truth_phantom(tmp_path / "s2", masks, seed=6, roles=("ax_t2",))
    bundles = write_test_bundles(tmp_path / "bundles")
    dest_port = free_port()
    destination = {
        "name": "viewer",
        "ae_title": "DEST",
        "host": "127.0.0.1",
        "port": dest_port,
        "route": "always",
        "send": {"seg": True, "sr": True, "sc": False},
    }
    scp = StoreSCP(tmp_path / "received", dest_port)
    scp.start()
    try:
        with running_truth_agent(
            tmp_path / "agent",
            masks,
            bundles,
            model={"mode": "silent"},
            destinations=[destination],
            delivery={"retry_seconds": [0.5], "poll_seconds": 0.2},
        ) as agent:
            sent = storescu(agent.port, files_of(first))
            assert sent.returncode == 0, sent.stdout + sent.stderr
            silent = agent.finished_job(first.study_instance_uid, deadline_s=120)
            assert silent["status"] == "done"
            assert silent["reason_code"] == "silent_mode"
            assert "model.mode" in silent["reason"]
            assert silent["deliveries"] == []
            assert {o["kind"] for o in silent["outputs"]} == {"seg", "sr"}
            assert any(e["kind"] == "silent_mode" for e in silent["events"])
            time.sleep(1.0)  # several delivery polls: nothing may arrive
            assert scp.received() == []

            url = f"http://127.0.0.1:{agent.http_port}/api/models/{CLS_NAME}/mode"
            body = {"mode": "live", "reason": "validated against readers"}
            assert requests.post(url, json=body, timeout=10).status_code == 401
            switched = requests.post(
                url, json=body, headers={"Authorization": f"Bearer {agent.token}"}, timeout=10
            )
            assert switched.status_code == 200, switched.text
            agent.cli("model", "mode", SEG_NAME, "live", "--reason", "validated SEG")

            models = agent.api("/api/models")
            by_name = {m["name"]: m for m in models["models"]}
            assert models["default_mode"] == "silent"
            for name, actor in ((CLS_NAME, "api:token"), (SEG_NAME, f"cli:{getpass.getuser()}")):
                assert by_name[name]["loaded"] is True
                assert by_name[name]["version"] == "0-test"
                assert by_name[name]["mode"] == "live"
                assert by_name[name]["changed_by"] == actor
            assert [c["model_name"] for c in models["audit"]] == [SEG_NAME, CLS_NAME]

            sent = storescu(agent.port, files_of(second))
            assert sent.returncode == 0, sent.stdout + sent.stderr
            live = agent.finished_job(second.study_instance_uid, deadline_s=120)
    finally:
        received = scp.received()
        scp.stop()
    assert live["status"] == "done"
    assert live["reason_code"] is None
    (delivery,) = live["deliveries"]
    assert delivery["status"] == "done"
    assert {str(dcmread(p).SOPInstanceUID) for p in received} == {
        o["sop_instance_uid"] for o in live["outputs"]
    }
