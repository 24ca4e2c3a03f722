"""STOW-RS into a running ``liver-agent serve``: a real DICOMweb client stores a study, a
hand-made request mixes a valid instance with a part that is not DICOM."""

from __future__ import annotations

import re
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.agent.http_data import mr_series, part10
from tests.integration.processes import running_agent, wait_until

pytestmark = pytest.mark.integration

TOKEN = "integration-token-5c1d0e8f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _api(port: int, path: str, **params: Any) -> Any:
    response = requests.get(
        f"http://127.0.0.1:{port}{path}", headers=AUTH, params=params, timeout=10
    )
    response.raise_for_status()
    return response.json() if "json" in response.headers["content-type"] else response.text


def test_dicomweb_client_stores_a_study_and_a_bad_part_fails_alone(tmp_path: Path) -> None:
    study_uid = generate_uid()
    datasets, _ = mr_series(study_uid, 5, rows=32, accession="STOW-1")
    with running_agent(tmp_path, worker={"threads": 0}, http={"token": TOKEN}) as agent:
        port = agent.http_port
        client = DICOMwebClient(url=f"http://127.0.0.1:{port}/dicomweb", headers=AUTH)
        result: Dataset = client.store_instances(datasets)
        assert sorted(
            str(i.ReferencedSOPInstanceUID) for i in result.ReferencedSOPSequence
        ) == sorted(str(ds.SOPInstanceUID) for ds in datasets)
        assert "FailedSOPSequence" not in result

        # the study completes after the quiet period and its job is queued (no workers here)
        jobs = wait_until(
            lambda: _api(port, "/api/jobs", study_instance_uid=study_uid)["jobs"],
            30,
            "the STOW study's job",
        )
        assert jobs[0]["status"] == "queued"
        assert jobs[0]["accession_number"] == "STOW-1"
        detail = _api(port, f"/api/jobs/{jobs[0]['id']}")
        assert detail["instance_count"] == 5
        assert detail["study"]["source_ae"] == "STOW"
        for ds in datasets:  # byte-identical data sets in the spool
            spooled = (
                agent.spool / study_uid / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
            )
            assert dcmread(spooled).PixelData == ds.PixelData

        # one valid instance of another study and one text part, sent by hand
        other_study = generate_uid()
        valid = mr_series(other_study, 1, rows=16)[0][0]
        boundary = "b-" + generate_uid().replace(".", "")
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                part10(valid),
                f"\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\n".encode(),
                b"hello, I am not an image",
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        response = requests.post(
            f"http://127.0.0.1:{port}/dicomweb/studies",
            data=body,
            headers={
                **AUTH,
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
            timeout=30,
        )
        assert response.status_code == 202
        assert response.headers["content-type"] == "application/dicom+json"
        answer = Dataset.from_json(response.json())
        assert [str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence] == [
            str(valid.SOPInstanceUID)
        ]
        assert [int(i.FailureReason) for i in answer.FailedSOPSequence] == [0xC000]
        stored = (
            agent.spool / other_study / str(valid.SeriesInstanceUID) / f"{valid.SOPInstanceUID}.dcm"
        )
        assert dcmread(BytesIO(stored.read_bytes())).SOPInstanceUID == valid.SOPInstanceUID

        # nothing else is affected: the first study keeps its five instances, its job stays
        studies = {s["study_instance_uid"]: s for s in _api(port, "/api/studies")["studies"]}
        assert studies[study_uid]["instance_count"] == 5
        assert studies[other_study]["instance_count"] == 1
        assert len(_api(port, "/api/jobs", study_instance_uid=study_uid)["jobs"]) == 1

        # without the token nothing is stored
        anonymous = DICOMwebClient(url=f"http://127.0.0.1:{port}/dicomweb")
        with pytest.raises(requests.HTTPError, match="401"):
            anonymous.store_instances(mr_series(generate_uid(), 1, rows=16)[0])

        metrics = _api(port, "/metrics")
        received = re.search(
            r'^liver_agent_instances_received_total\{protocol="stow"\} (\S+)$', metrics, re.M
        )
        assert received is not None
        assert float(received.group(1)) == 6
        assert _api(port, "/healthz") == {"status": "ok"}
        assert agent.proc is not None
        assert agent.proc.poll() is None
    assert TOKEN not in agent.log()
