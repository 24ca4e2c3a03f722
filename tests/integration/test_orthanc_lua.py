"""Auto-routing with ``deploy/orthanc/route-liver.lua``: a liver study uploaded to Orthanc reaches
the agent without anyone ordering a send, its results come back, and nothing loops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.bundles import write_test_bundles
from tests.integration.orthanc import (
    AGENT_MODALITY,
    Modality,
    OrthancProcess,
    orthanc_missing,
    running_orthanc,
    wait_for_results,
)
from tests.integration.processes import wait_until
from tests.integration.truth_agent import (
    TruthAgentProcess,
    check_whole_study_received,
    files_of,
    running_truth_agent,
    truth_phantom,
)

pytestmark = pytest.mark.integration

LUA = Path(__file__).resolve().parents[2] / "deploy" / "orthanc" / "route-liver.lua"
STORE_JOB = "DicomModalityStore"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_test_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture
def routed(
    tmp_path: Path, bundles: tuple[Path, Path]
) -> Iterator[tuple[OrthancProcess, TruthAgentProcess, Path]]:
    """Orthanc running the routing script (stable after 2 s) and the agent it routes to."""
    if missing := orthanc_missing():
        pytest.fail(missing)
    masks = tmp_path / "masks"
    with running_orthanc(
        tmp_path / "orthanc",
        lua_scripts=[LUA],
        stable_age=2,
        extra={"UserMetadata": {"LiverAgentSent": 4301}},
    ) as orthanc:
        destination = {
            "name": "pacs",
            "ae_title": orthanc.aet,
            "host": "127.0.0.1",
            "port": orthanc.dicom_port,
            "send": {"sc": True},  # SEG, SR and SC must all stay in Orthanc
        }
        with running_truth_agent(
            tmp_path / "agent", masks, bundles, destinations=[destination]
        ) as agent:
            orthanc.add_modality(AGENT_MODALITY, Modality(agent.ae_title, agent.port))
            yield orthanc, agent, masks


def lua_said(orthanc: OrthancProcess, study_id: str, words: str) -> bool:
    """Whether the script logged ``words`` about the study (Lua ``print`` goes to the log)."""
    return f"study {study_id}: {words}" in orthanc.log()


def brain_study(source: list[Path], out: Path) -> list[Path]:
    """Copies of a phantom's files relabelled as a head MR (new UIDs, head descriptions)."""
    study_uid = generate_uid()
    series_uids: dict[str, str] = {}
    written = []
    for n, path in enumerate(source):
        ds = dcmread(path)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uids.setdefault(ds.SeriesInstanceUID, generate_uid())
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyDescription = "MRI HEAD"
        ds.BodyPartExamined = "HEAD"
        ds.SeriesDescription = "t2_tse_tra"  # axial T2, but of the head
        ds.ProtocolName = "t2_tse_tra"
        out.mkdir(parents=True, exist_ok=True)
        ds.save_as(out / f"{n}.dcm")
        written.append(out / f"{n}.dcm")
    return written


def test_liver_study_is_routed_and_results_do_not_loop(
    tmp_path: Path, routed: tuple[OrthancProcess, TruthAgentProcess, Path]
) -> None:
    orthanc, agent, masks = routed
    study = truth_phantom(tmp_path / "study", masks, seed=21, roles=("localizer", "ax_t2", "dwi"))
    study_id = orthanc.upload(files_of(study))  # REST only: the script does the rest

    _, found, _ = wait_for_results(orthanc, study.study_instance_uid, {"SEG", "SR", "SC"}, 60)
    job = agent.finished_job(study.study_instance_uid)
    assert job["status"] == "done", job
    assert job["study"]["source_ae"] == orthanc.aet
    check_whole_study_received(agent, study, job)
    (seg,) = found["SEG"]
    assert seg["MainDicomTags"]["SeriesInstanceUID"] == next(
        o["series_instance_uid"] for o in job["outputs"] if o["kind"] == "seg"
    )

    # the results made the study stable again: the script ran and sent nothing more
    wait_until(
        lambda: lua_said(orthanc, study_id, "nothing new to send"),
        30,
        "the script's second look at the study",
    )
    (store,) = orthanc.jobs(STORE_JOB)
    assert store["State"] == "Success"
    assert store["Content"]["InstancesCount"] == len(files_of(study))
    jobs = agent.api("/api/jobs", study_instance_uid=study.study_instance_uid)["jobs"]
    assert [j["version"] for j in jobs] == [1]
    # the script remembers what it sent in Orthanc's metadata (survives a restart)
    for series in orthanc.series(study_id):
        tags = series["MainDicomTags"]
        sent = "LiverAgentSent" in orthanc.get(f"/series/{series['ID']}/metadata")
        assert sent == (tags["Modality"] == "MR" and tags["Manufacturer"] != "liver-agent"), tags


def test_study_of_another_body_part_is_not_routed(
    tmp_path: Path, routed: tuple[OrthancProcess, TruthAgentProcess, Path]
) -> None:
    orthanc, agent, masks = routed
    liver = truth_phantom(tmp_path / "liver", masks, seed=22, roles=("localizer", "ax_t2"))
    head_id = orthanc.upload(brain_study(files_of(liver), tmp_path / "head"))
    wait_until(
        lambda: lua_said(orthanc, head_id, "not a liver MR exam"),
        30,
        "the script's decision on the head study",
    )
    assert orthanc.jobs(STORE_JOB) == []
    assert agent.api("/api/studies")["total"] == 0
