"""The DEMO networks never speak about a real patient: phantoms carry a marker, a DEMO
segmentation bundle evaluates nothing else, a DEMO classifier behind a real segmentation bundle
gives no finding. Checked on real anatomy (CHAOS subjects written as DICOM)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from agent.worker import _store_result
from pipeline.demo_bundles import bundle_paths
from pipeline.demo_scope import (
    DEMO_SEGMENTATION_REFUSED,
    is_phantom,
    is_phantom_study,
    mark_phantom,
)
from pipeline.nifti_dicom import write_nifti_as_dicom
from pipeline.outputs import OutputOptions, build_outputs, write_outputs
from pipeline.phantoms import generate_study
from pipeline.run import Models, result_to_json, run_pipeline
from pipeline.study_headers import scan_study
from storage.models import Job
from tests.bundles import write_test_bundles
from tests.chaos import CHAOS, requires_chaos
from tests.pipeline.outputs.validation import assert_valid


def _texts(ds: Dataset) -> str:
    """Every TextValue of an SR content tree, joined."""
    found = [str(ds.TextValue)] if "TextValue" in ds else []
    for item in ds.get("ContentSequence", []):
        found.append(_texts(item))
    return "\n".join(found)


def _codes(ds: Dataset) -> set[str]:
    """Every CodeValue anywhere in a dataset."""
    found: set[str] = set()
    for element in ds:
        if element.keyword == "CodeValue":
            found.add(str(element.value))
        elif element.VR == "SQ":
            for item in element.value:
                found |= _codes(item)
    return found


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_every_phantom_instance_carries_the_marker(tmp_path: Path, syntax: str) -> None:
    study = generate_study(
        tmp_path,
        cirrhotic=False,
        seed=1,
        roles=("localizer", "ax_t2"),
        axial_t2_slices=12,
        matrix=32,
        transfer_syntax=syntax,
    )
    files = [f for series in study.series for f in series.files]
    assert files
    assert all(is_phantom(dcmread(f, stop_before_pixels=True)) for f in files)
    headers = scan_study([tmp_path])
    assert is_phantom_study(headers.reference(), headers.series[-1].headers)


def test_a_study_without_the_marker_or_with_another_value_is_not_a_phantom() -> None:
    ds = Dataset()
    assert not is_phantom(ds)
    ds.private_block(0x0009, "LIVER-AGENT PHANTOM", create=True).add_new(0x01, "LO", "REAL")
    assert not is_phantom(ds)
    other = Dataset()
    other.private_block(0x0009, "SOMEONE ELSE", create=True).add_new(
        0x01, "LO", "SYNTHETIC PHANTOM liver-agent/1"
    )
    assert not is_phantom(other)
    marked = Dataset()
    mark_phantom(marked)
    assert is_phantom(marked)
    assert not is_phantom_study(marked, [marked, other])
    assert not is_phantom_study(marked, [])


def test_missing_bundles_are_demo_bundles_of_their_task(tmp_path: Path) -> None:
    seg, cls = write_test_bundles(tmp_path / "b")
    assert bundle_paths(seg, cls, tmp_path / "cache") == (seg, cls)
    assert not (tmp_path / "cache").exists()  # nothing built when both are configured


@requires_chaos
def test_demo_bundles_answer_not_evaluated_for_a_chaos_subject(tmp_path: Path) -> None:
    write_nifti_as_dicom(CHAOS / "image_3.nii.gz", tmp_path / "study", subject="3")
    seg, cls = write_test_bundles(tmp_path / "bundles", demo=True)
    result = run_pipeline(scan_study([tmp_path / "study"]), Models.load(seg, cls, "cpu"))
    assert not result.evaluated
    assert result.reason_code == DEMO_SEGMENTATION_REFUSED
    assert result.reason is not None
    assert "liver-agent model build-chaos" in result.reason
    assert "model.segmentation" in result.reason
    assert "segment" not in result.timings  # the network never ran
    (obj,) = build_outputs(result)
    assert obj.kind == "not_evaluated_sr"
    (path,) = write_outputs([obj], tmp_path / "out")
    assert "build-chaos" in _texts(dcmread(path))
    assert_valid(path)


def test_demo_bundles_still_evaluate_phantoms(tmp_path: Path) -> None:
    generate_study(
        tmp_path / "study",
        cirrhotic=True,
        seed=2,
        roles=("ax_t2",),
        axial_t2_slices=16,
        matrix=32,
    )
    seg, cls = write_test_bundles(tmp_path / "bundles", demo=True)
    result = run_pipeline(scan_study([tmp_path / "study"]), Models.load(seg, cls, "cpu"))
    assert result.reason_code != DEMO_SEGMENTATION_REFUSED
    assert "segment" in result.timings  # untrained: it may find no liver, but it ran
    assert not result.evaluated or result.finding_withheld is None


@pytest.mark.slow  # trains the small CHAOS bundle (30 s to 2 min of CPU)
@requires_chaos
def test_a_demo_classifier_behind_a_real_segmentation_gives_no_finding(
    tmp_path: Path, chaos_segmentation_bundle: Path
) -> None:
    write_nifti_as_dicom(CHAOS / "image_3.nii.gz", tmp_path / "study", subject="3")
    _, demo_cls = write_test_bundles(tmp_path / "bundles", demo=True)
    models = Models.load(chaos_segmentation_bundle, demo_cls, "cpu")
    result = run_pipeline(scan_study([tmp_path / "study"]), models)
    assert result.evaluated, result.reason
    assert result.segmentation is not None
    assert result.segmentation.mask.any()
    assert result.classification is None
    assert result.finding_withheld is not None
    assert "DEMO" in result.finding_withheld
    assert "classify" not in result.timings
    summary = result_to_json(result)
    assert summary["classification"] is None
    assert "model.classification" in summary["finding_withheld"]
    job = Job()  # what the worker keeps of it: the job page says why there is no finding
    _store_result(job, result)
    assert job.label is None
    assert job.details is not None
    assert job.details["finding_withheld"] == result.finding_withheld

    objects = build_outputs(result, OutputOptions(sc=True))
    assert [o.kind for o in objects] == ["seg", "sr", "sc"]  # the real SEG still goes out
    paths = write_outputs(objects, tmp_path / "out")
    for path in paths:
        assert_valid(path)
    sr = hd.sr.srread(tmp_path / "out" / "sr.dcm")
    assert "Cirrhosis of liver: NOT EVALUATED" in _texts(sr)
    found = _codes(sr)
    assert "10200004" in found  # the liver measurements are there ...
    # no finding group: no qualitative evaluation Present (52101004) / Absent (272519000)
    assert "52101004" not in found  # ... but no Present
    assert "272519000" not in found  # ... nor Absent
    assert "19943007" not in found  # ... nor a Cirrhosis of liver finding group
