"""T2-first through `liver-agent serve`: storescu sends the axial T2 first, the results reach
the storescp destination while the study is still incomplete, and the series sent afterwards
do not run the job again (the PACS gets one result set)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from pydicom import dcmread

from tests.bundles import write_test_bundles
from tests.integration.processes import free_port, storescu, wait_until
from tests.integration.truth_agent import running_truth_agent, truth_phantom

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUIET = 25.0  # the study-level rule: far longer than T2-first needs


def test_results_before_the_study_is_complete_and_no_second_run(tmp_path: Path) -> None:
    from tests.agent.test_delivery import StoreSCP

    masks = tmp_path / "masks"
    study = truth_phantom(
        tmp_path / "study", masks, seed=7, roles=("localizer", "ax_t2", "t1_in_opp", "dwi", "adc")
    )
    by_role = {s.role: list(s.files) for s in study.series}
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
            destinations=[destination],
            completion={"quiet_seconds": QUIET, "stable_seconds": 120, "series_quiet_seconds": 1},
            delivery={"poll_seconds": 0.2},
        ) as agent:

            def ready() -> bool:  # models loaded: the time measured below is T2-first's own
                response = requests.get(
                    f"http://127.0.0.1:{agent.http_port}/readyz",
                    headers={"Authorization": f"Bearer {agent.token}"},
                    timeout=10,
                )
                return response.status_code == 200

            wait_until(ready, 180, "the agent to be ready (models loaded)", interval=0.5)
            sent = storescu(agent.port, by_role["localizer"] + by_role["ax_t2"])
            assert sent.returncode == 0, sent.stdout + sent.stderr
            sent_at = time.monotonic()

            def done_early() -> dict[str, object] | None:
                jobs = agent.api("/api/jobs", study_instance_uid=study.study_instance_uid)["jobs"]
                if not jobs or jobs[0]["status"] != "done":
                    return None
                detail: dict[str, object] = agent.api(f"/api/jobs/{jobs[0]['id']}")
                return detail

            job = wait_until(done_early, QUIET - 2, "a T2-first job done before study completion")
            assert time.monotonic() - sent_at < QUIET
            assert job["study"]["status"] == "receiving"  # type: ignore[index]
            assert job["version"] == 1
            snapshot = job["details"]["t2_first"]  # type: ignore[index]
            assert snapshot["series_instance_uid"] == study.target_series_uid
            assert snapshot["instance_count"] == len(by_role["ax_t2"])
            early = scp.received()
            assert len(early) == 2  # SEG + SR, before the study was complete

            rest = by_role["t1_in_opp"] + by_role["dwi"] + by_role["adc"]
            sent = storescu(agent.port, rest)
            assert sent.returncode == 0, sent.stdout + sent.stderr

            def completed() -> dict[str, object] | None:
                detail: dict[str, object] = agent.api(f"/api/jobs/{job['id']}")
                study_view = detail["study"]
                return detail if study_view["status"] == "complete" else None  # type: ignore[index]

            final = wait_until(completed, QUIET + 30, "the study to complete")
            time.sleep(1.5)  # several worker and delivery polls: nothing more may run or arrive
            jobs = agent.api("/api/jobs", study_instance_uid=study.study_instance_uid)["jobs"]
    finally:
        scp.stop()
    assert [j["id"] for j in jobs] == [job["id"]], "the late series ran the job again"
    messages = [e["message"] for e in final["events"]]  # type: ignore[attr-defined]
    assert any("T2-first result stands" in m for m in messages), messages
    received = scp.received()
    assert len(received) == 2, "a second result set reached the destination"
    assert {str(dcmread(p).Modality) for p in received} == {"SEG", "SR"}
