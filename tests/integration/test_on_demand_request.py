"""On-demand requests against a real Orthanc: ``POST /api/requests`` (C-MOVE into the running
agent) and ``liver-agent request`` (C-GET from the command) retrieve one study, which the
running agent processes like a pushed one and delivers back to Orthanc."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from pydicom import dcmread

from tests.bundles import write_test_bundles
from tests.integration.orthanc import Modality, orthanc_missing, running_orthanc, wait_for_results
from tests.integration.truth_agent import files_of, running_truth_agent, truth_phantom

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_requests_retrieve_and_process_like_pushed_studies(tmp_path: Path) -> None:
    if missing := orthanc_missing():
        pytest.fail(missing)
    masks = tmp_path / "masks"
    bundles = write_test_bundles(tmp_path / "bundles")
    by_api = truth_phantom(tmp_path / "a", masks, seed=41, roles=("localizer", "ax_t2", "dwi"))
    by_cli = truth_phantom(tmp_path / "b", masks, seed=42, roles=("ax_t2",), cirrhotic=False)
    with running_orthanc(tmp_path / "orthanc") as orthanc:
        for study in (by_api, by_cli):
            orthanc.upload(files_of(study))
        node = {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
        sources = [
            {"name": "pacs", **node, "retrieve": "move"},
            {"name": "pacs-get", **node, "retrieve": "get"},
        ]
        destination = {"name": "orthanc", **node, "route": "always"}
        with running_truth_agent(
            tmp_path / "agent", masks, bundles, destinations=[destination], sources=sources
        ) as agent:
            orthanc.add_modality("liveragent", Modality(agent.ae_title, agent.port))
            url = f"http://127.0.0.1:{agent.http_port}/api/requests"
            auth = {"Authorization": f"Bearer {agent.token}"}
            accession = str(dcmread(files_of(by_api)[0], stop_before_pixels=True).AccessionNumber)

            answer = requests.post(
                url, json={"study": accession, "source": "pacs"}, headers=auth, timeout=120
            )
            assert answer.status_code == 202, answer.text
            body = answer.json()
            assert body["study_instance_uid"] == by_api.study_instance_uid
            assert body["series"] == 1  # the axial T2 only: localizer and DWI not fetched
            assert body["instances"] == len(by_api.series_by_role("ax_t2").files)
            job = agent.finished_job(by_api.study_instance_uid, 120)
            assert job["status"] == "done", job
            assert job["series_instance_uid"] == by_api.target_series_uid
            wait_for_results(orthanc, by_api.study_instance_uid, {"SEG", "SR"}, 60)

            unknown = requests.post(
                url, json={"study": "NOSUCH42", "source": "pacs"}, headers=auth, timeout=60
            )
            assert unknown.status_code == 404
            assert unknown.json()["code"] == "accession_not_found"
            refused = requests.post(url, json={"study": accession}, timeout=10)
            assert refused.status_code == 401  # no token, no retrieval

            cli = agent.cli("request", by_cli.study_instance_uid, "--source", "pacs-get")
            assert by_cli.study_instance_uid in cli.stdout
            job = agent.finished_job(by_cli.study_instance_uid, 120)
            assert job["status"] == "done", job
            wait_for_results(orthanc, by_cli.study_instance_uid, {"SEG", "SR"}, 60)


def test_a_cohort_pulled_into_a_running_agent_makes_no_job(tmp_path: Path) -> None:
    """C-MOVE results land on the running serve's SCP (the pull sees it answer and starts no
    SCP of its own); the study is stored but never becomes a job, so nothing goes back."""
    if missing := orthanc_missing():
        pytest.fail(missing)
    masks = tmp_path / "masks"
    bundles = write_test_bundles(tmp_path / "bundles")
    study = truth_phantom(tmp_path / "a", masks, seed=43, roles=("ax_t2",))
    other = truth_phantom(tmp_path / "b", masks, seed=44, roles=("ax_t2",), cirrhotic=False)
    with running_orthanc(tmp_path / "orthanc") as orthanc:
        orthanc.upload(files_of(study))
        orthanc.upload(files_of(other))
        node = {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
        destination = {"name": "orthanc", **node, "route": "always"}
        with running_truth_agent(
            tmp_path / "agent",
            masks,
            bundles,
            destinations=[destination],
            sources=[{"name": "pacs", **node, "retrieve": "move"}],
        ) as agent:
            orthanc.add_modality("liveragent", Modality(agent.ae_title, agent.port))
            csv_file = tmp_path / "uids.csv"
            csv_file.write_text(f"study_uid\n{study.study_instance_uid}\n")
            pulled = agent.cli("cohort", "pull", "quiet", "--csv", str(csv_file))
            assert "1 retrieved" in pulled.stdout, pulled.stdout + pulled.stderr
            status = agent.cli("cohort", "status", "quiet", "--json")
            (row,) = json.loads(status.stdout)["studies"]
            assert row["instances"] == len(study.series_by_role("ax_t2").files)
            # a study requested after it completes and is processed: the completion rule ran
            # over the cohort study all that time
            answer = requests.post(
                f"http://127.0.0.1:{agent.http_port}/api/requests",
                json={"study": other.study_instance_uid},
                headers={"Authorization": f"Bearer {agent.token}"},
                timeout=120,
            )
            assert answer.status_code == 202, answer.text
            assert agent.finished_job(other.study_instance_uid, 120)["status"] == "done"
            assert agent.api("/api/jobs", study_instance_uid=study.study_instance_uid)["jobs"] == []
            assert orthanc.agent_results(orthanc.study_id(study.study_instance_uid) or "") == {}
