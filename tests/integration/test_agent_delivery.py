"""storescu -> liver-agent serve -> storescp: the results leave the agent, retried while the
destination is down, sent once it is up, and never sent twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.bundles import write_test_bundles
from tests.integration.processes import free_port, storescu, wait_until
from tests.integration.truth_agent import files_of, running_truth_agent, truth_phantom

pytestmark = pytest.mark.integration

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def test_results_reach_storescp_after_it_comes_up_and_only_once(tmp_path: Path) -> None:
    from tests.agent.test_delivery import StoreSCP

    masks = tmp_path / "masks"
    study = truth_phantom(
        tmp_path / "study", masks, seed=3, roles=("localizer", "ax_t2", "dwi"), cirrhotic=True
    )
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
    with running_truth_agent(
        tmp_path / "agent",
        masks,
        bundles,
        destinations=[destination],
        delivery={"retry_seconds": [0.5, 0.5, 0.5, 30], "poll_seconds": 0.2},
    ) as agent:
        sent = storescu(agent.port, files_of(study))
        assert sent.returncode == 0, sent.stdout + sent.stderr

        def failed_once() -> dict[str, object] | None:
            jobs = agent.api("/api/jobs", study_instance_uid=study.study_instance_uid)["jobs"]
            if not jobs:
                return None
            detail = agent.api(f"/api/jobs/{jobs[0]['id']}")
            deliveries = detail["deliveries"]
            return detail if deliveries and deliveries[0]["attempts"] >= 2 else None

        job = wait_until(failed_once, 90, "two failed delivery attempts")
        (delivery,) = job["deliveries"]
        assert job["status"] == "delivering"
        assert delivery["status"] == "pending"
        assert "did not accept an association" in delivery["last_error"]
        assert job["evaluated"] is True

        scp.start()
        try:
            done = agent.finished_job(study.study_instance_uid, deadline_s=60)
            received = scp.received()
            time.sleep(1.5)  # several delivery polls: nothing more may arrive
            again = scp.received()
        finally:
            scp.stop()
    assert done["status"] == "done"
    (delivery,) = done["deliveries"]
    assert delivery["status"] == "done"
    assert delivery["objects_sent"] == delivery["objects"] == 2
    assert again == received
    objects = {str(ds.SOPClassUID): ds for ds in (dcmread(p) for p in received)}
    assert set(objects) == {SEG, COMPREHENSIVE_3D_SR}
    assert {o["sop_instance_uid"] for o in done["outputs"]} == {
        str(ds.SOPInstanceUID) for ds in objects.values()
    }
    seg = objects[SEG]
    assert seg.StudyInstanceUID == study.study_instance_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study.target_series_uid
    assert "RESEARCH USE ONLY" in seg.SeriesDescription
