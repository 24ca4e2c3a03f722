"""The real PACS loop: Orthanc sends a study to ``liver-agent serve``, the agent sends SEG, SR
(and SC) back by C-STORE or STOW-RS, and Orthanc's REST API and DICOMweb show them in the study."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pipeline.phantoms import PhantomStudy
from tests.bundles import write_test_bundles
from tests.integration.orthanc import (
    Modality,
    OrthancProcess,
    orthanc_missing,
    running_orthanc,
    wait_for_results,
)
from tests.integration.truth_agent import (
    TruthAgentProcess,
    check_whole_study_received,
    files_of,
    running_truth_agent,
    truth_phantom,
)

pytestmark = pytest.mark.integration

USER, PASSWORD = "pacs", "orthanc-test-5e2b"
PROBABILITY = hd.sr.CodedConcept("122157", "DCM", "Probability")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    """One Orthanc for the module, HTTP authentication on; each test registers its agent."""
    if missing := orthanc_missing():
        pytest.fail(missing)
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), users={USER: PASSWORD}) as server:
        yield server


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_test_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def masks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("masks")


@pytest.fixture(scope="module")
def dimse_agent(
    tmp_path_factory: pytest.TempPathFactory,
    orthanc: OrthancProcess,
    masks: Path,
    bundles: tuple[Path, Path],
) -> Iterator[TruthAgentProcess]:
    """The agent with Orthanc as its DIMSE destination (results go back to the sender)."""
    destination = {
        "name": "orthanc",
        "ae_title": orthanc.aet,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "send": {"sc": True},
    }
    workdir = tmp_path_factory.mktemp("dimse-agent")
    with running_truth_agent(workdir, masks, bundles, destinations=[destination]) as agent:
        orthanc.add_modality("liveragent", Modality(agent.ae_title, agent.port))
        yield agent


def instance(orthanc: OrthancProcess, series: dict[str, Any]) -> Dataset:
    (instance_id,) = series["Instances"]
    return dcmread(BytesIO(orthanc.instance_file(instance_id)))


def qido_series(orthanc: OrthancProcess, study_uid: str, modality: str) -> list[str]:
    """Series Instance UIDs of the study's series of a modality, by QIDO-RS."""
    response = orthanc.session.get(
        f"{orthanc.dicomweb_url}/studies/{study_uid}/series",
        params={"Modality": modality},
        headers={"Accept": "application/dicom+json"},
        timeout=10,
    )
    response.raise_for_status()
    return [item["0020000E"]["Value"][0] for item in response.json()]


def check_delivered(job: dict[str, Any], destination: str, objects: int) -> None:
    (delivery,) = job["deliveries"]
    assert delivery["destination"] == destination
    assert delivery["status"] == "done", delivery
    assert delivery["objects"] == delivery["objects_sent"] == objects


def check_evaluated_results(
    orthanc: OrthancProcess,
    study: PhantomStudy,
    job: dict[str, Any],
    found: dict[str, list[dict[str, Any]]],
) -> None:
    """SEG references the T2 series; the SR's finding is the job's; both are the job's outputs
    and QIDO-RS finds them in the study."""
    outputs = {o["kind"]: o for o in job["outputs"]}
    assert job["evaluated"] is True
    assert job["series_instance_uid"] == study.target_series_uid

    seg = instance(orthanc, found["SEG"][0])
    assert seg.SOPInstanceUID == outputs["seg"]["sop_instance_uid"]
    assert seg.StudyInstanceUID == study.study_instance_uid
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == study.target_series_uid
    t2 = study.series_by_role("ax_t2")
    assert int(seg.NumberOfFrames) == len(t2.files)  # one frame per slice of the T2 series

    sr_ds = instance(orthanc, found["SR"][0])
    assert sr_ds.SOPInstanceUID == outputs["sr"]["sop_instance_uid"]
    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_ds)
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    # the finding is in the TID 1410 group on the caudate slice; probability in percent
    (group,) = report.get_planar_roi_measurement_groups()
    (evaluation,) = group.get_qualitative_evaluations(name=codes.SCT.CirrhosisOfLiver)
    (probability,) = group.get_measurements(name=PROBABILITY)
    assert probability.value == pytest.approx(100 * job["probability"], rel=1e-6)
    present = evaluation.value == codes.SCT.Present
    assert present == (job["label"] == "cirrhosis")
    assert present == (job["probability"] >= job["details"]["threshold"])
    assert group.roi is not None
    (source,) = group.roi.ContentSequence
    assert (
        source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (job["slice_sop_instance_uid"])
    )

    for modality, kind in (("SEG", "seg"), ("SR", "sr")):
        uids = qido_series(orthanc, study.study_instance_uid, modality)
        assert uids == [outputs[kind]["series_instance_uid"]]
    # WADO-RS metadata of the SEG: Referenced Series Sequence -> the T2 series
    response = orthanc.session.get(
        f"{orthanc.dicomweb_url}/studies/{study.study_instance_uid}/series/"
        f"{outputs['seg']['series_instance_uid']}/metadata",
        timeout=10,
    )
    response.raise_for_status()
    (metadata,) = response.json()
    (reference,) = metadata["00081115"]["Value"]
    assert reference["0020000E"]["Value"] == [study.target_series_uid]


def test_dimse_round_trip_seg_sr_sc(
    tmp_path: Path, orthanc: OrthancProcess, dimse_agent: TruthAgentProcess, masks: Path
) -> None:
    study = truth_phantom(tmp_path, masks, seed=11, roles=("localizer", "ax_t2", "dwi"))
    study_id = orthanc.upload(files_of(study))
    orthanc.send_to_modality("liveragent", [study_id])

    _, found, _ = wait_for_results(orthanc, study.study_instance_uid, {"SEG", "SR", "SC"}, 60)
    job = dimse_agent.finished_job(study.study_instance_uid)
    assert job["status"] == "done", job
    assert job["study"]["source_ae"] == orthanc.aet
    check_whole_study_received(dimse_agent, study, job)
    check_delivered(job, "orthanc", 3)
    check_evaluated_results(orthanc, study, job, found)

    sc = instance(orthanc, found["SC"][0])
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    assert sc.SOPInstanceUID == {o["kind"]: o for o in job["outputs"]}["sc"]["sop_instance_uid"]
    # results came in by DIMSE from the agent's AE title
    seg_id = found["SEG"][0]["Instances"][0]
    assert orthanc.get_bytes(f"/instances/{seg_id}/metadata/Origin") == b"DicomProtocol"
    assert orthanc.get_bytes(f"/instances/{seg_id}/metadata/RemoteAET") == b"LIVERAI"


def test_study_without_axial_t2_comes_back_as_not_evaluated_sr(
    tmp_path: Path, orthanc: OrthancProcess, dimse_agent: TruthAgentProcess, masks: Path
) -> None:
    study = truth_phantom(tmp_path, masks, seed=12, roles=("localizer", "cor_t2", "dwi"))
    assert study.target_series_uid is None
    study_id = orthanc.upload(files_of(study))
    orthanc.send_to_modality("liveragent", [study_id])

    _, found, _ = wait_for_results(orthanc, study.study_instance_uid, {"SR"}, 60)
    job = dimse_agent.finished_job(study.study_instance_uid)
    assert job["status"] == "not_evaluated", job
    assert job["reason_code"] == "no_axial_t2"
    check_delivered(job, "orthanc", 1)
    assert set(orthanc.agent_results(study_id)) == {"SR"}  # no SEG, no SC

    sr = instance(orthanc, found["SR"][0])
    assert "NOT EVALUATED" in sr.SeriesDescription
    texts = list(_texts(sr))
    # the statement is broken into lines of 80 characters (viewers show it preformatted)
    finding = " ".join(next(t for t in texts if t.startswith("Not evaluated: ")).split())
    assert job["reason"] in finding
    assert "axial T2" in finding


def _texts(item: Dataset) -> Iterator[str]:
    for child in item.get("ContentSequence", []):
        if child.ValueType == "TEXT":
            yield str(child.TextValue)
        yield from _texts(child)


def test_stow_rs_delivery_to_orthanc_dicomweb(
    tmp_path: Path, orthanc: OrthancProcess, masks: Path, bundles: tuple[Path, Path]
) -> None:
    destination = {
        "name": "orthanc-web",
        "stow_url": orthanc.dicomweb_url,
        "username": USER,
        "password": PASSWORD,
        "route": "always",
    }
    study = truth_phantom(tmp_path / "study", masks, seed=13, roles=("localizer", "ax_t2"))
    with running_truth_agent(
        tmp_path / "agent", masks, bundles, destinations=[destination]
    ) as agent:
        orthanc.add_modality("liveragent-stow", Modality(agent.ae_title, agent.port))
        study_id = orthanc.upload(files_of(study))
        orthanc.send_to_modality("liveragent-stow", [study_id])

        _, found, _ = wait_for_results(orthanc, study.study_instance_uid, {"SEG", "SR"}, 60)
        job = agent.finished_job(study.study_instance_uid)
    assert job["status"] == "done", job
    check_delivered(job, "orthanc-web", 2)
    check_evaluated_results(orthanc, study, job, found)
    assert "SC" not in found  # send.sc is off by default
    seg_id = found["SEG"][0]["Instances"][0]
    assert orthanc.get_bytes(f"/instances/{seg_id}/metadata/Origin") != b"DicomProtocol"


def test_native_front_end_round_trip(
    tmp_path: Path, orthanc: OrthancProcess, masks: Path, bundles: tuple[Path, Path]
) -> None:
    """The same loop with DCMTK storescp in front of the agent (dicom.native): Orthanc's
    C-STORE goes to storescp, the agent takes the files in, the study completes by its quiet
    period, and the results go back to the sender named by native.source_ae."""
    destination = {
        "name": "orthanc",
        "ae_title": orthanc.aet,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
    }
    native = {"enabled": True, "source_ae": orthanc.aet}
    with running_truth_agent(
        tmp_path / "agent",
        masks,
        bundles,
        destinations=[destination],
        dicom={"require_called_ae": False, "native": native},
    ) as agent:
        orthanc.add_modality("liveragent-native", Modality(agent.ae_title, agent.port))
        study = truth_phantom(tmp_path, masks, seed=17, roles=("localizer", "ax_t2", "dwi"))
        study_id = orthanc.upload(files_of(study))
        orthanc.send_to_modality("liveragent-native", [study_id])
        _, found, _ = wait_for_results(orthanc, study.study_instance_uid, {"SEG", "SR"}, 60)
        job = agent.finished_job(study.study_instance_uid)
        assert job["status"] == "done", job
        assert job["study"]["source_ae"] == orthanc.aet
        check_whole_study_received(agent, study, job)
        check_delivered(job, "orthanc", 2)
        check_evaluated_results(orthanc, study, job, found)
        assert "native front end: storescp" in agent.log()
