"""Result objects for phantom studies of each vendor: valid, and faithful to the ground truth."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless

from pipeline.outputs import OutputOptions, build_outputs, write_outputs
from pipeline.phantoms import VENDORS, Vendor, generate_study
from pipeline.study_headers import scan_study
from pipeline.volume import load_volume
from tests.pipeline.outputs.synthetic_mr import result_for_volume
from tests.pipeline.outputs.validation import assert_valid

CASES = [
    pytest.param(vendor, cirrhotic, syntax, omit, id=f"{vendor}-{name}")
    for vendor, cirrhotic, syntax, omit, name in [
        (VENDORS[0], True, ExplicitVRLittleEndian, False, "cirrhotic-keep"),
        (VENDORS[1], False, JPEGLSLossless, True, "normal-jpegls-omit"),
        (VENDORS[2], True, RLELossless, False, "cirrhotic-rle-keep"),
    ]
]


def test_cases_cover_every_vendor() -> None:
    assert {c.values[0] for c in CASES} == set(VENDORS)


@pytest.mark.parametrize(("vendor", "cirrhotic", "syntax", "omit"), CASES)
def test_phantom_study_outputs(
    tmp_path: Path, vendor: Vendor, cirrhotic: bool, syntax: str, omit: bool
) -> None:
    phantom = generate_study(
        tmp_path / "study",
        cirrhotic=cirrhotic,
        vendor=vendor,
        seed=7,
        roles=("localizer", "ax_t2"),
        axial_t2_slices=14,
        matrix=64,
        transfer_syntax=syntax,
    )
    assert phantom.target_series_uid is not None
    assert phantom.liver_mask is not None
    assert phantom.caudate_index is not None
    study = scan_study([tmp_path / "study"])
    volume = load_volume(study.series_by_uid(phantom.target_series_uid))
    probability = 0.93 if cirrhotic else 0.12
    result = result_for_volume(
        volume,
        phantom.liver_mask,
        study.reference(),
        present=cirrhotic,
        probability=probability,
        caudate_index=phantom.caudate_index,
    )
    objects = build_outputs(result, OutputOptions(sc=True, omit_empty_frames=omit))
    paths = write_outputs(objects, tmp_path / "out")
    assert [p.name for p in paths] == ["seg.dcm", "sr.dcm", "sc.dcm"]
    for path in paths:
        assert_valid(path)

    seg = hd.seg.segread(paths[0])
    assert seg.FrameOfReferenceUID == volume.frame_of_reference_uid
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(volume.sop_instance_uids),
        segment_numbers=[1],
        combine_segments=True,
    )
    for k in range(volume.shape[0]):
        np.testing.assert_array_equal(pixels[k] > 0, phantom.liver_mask[k], err_msg=f"slice {k}")

    sr = hd.sr.srread(paths[1])
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    # the finding is in the TID 1410 group on the caudate slice; probability in percent
    (group,) = report.get_planar_roi_measurement_groups()
    (evaluation,) = group.get_qualitative_evaluations(name=codes.SCT.CirrhosisOfLiver)
    assert evaluation.value == (codes.SCT.Present if cirrhotic else codes.SCT.Absent)
    (prob,) = group.get_measurements(name=hd.sr.CodedConcept("122157", "DCM", "Probability"))
    assert prob.value == pytest.approx(100 * probability)
    (liver,) = report.get_volumetric_roi_measurement_groups()
    (volume_ml,) = liver.get_measurements(name=codes.SCT.Volume)
    assert phantom.liver_volume_ml is not None
    assert volume_ml.value == pytest.approx(phantom.liver_volume_ml, rel=1e-3)
    header = volume.headers[phantom.caudate_index]
    slice_text = (
        f"Caudate-level slice: series {header.SeriesNumber} "
        f"'{header.SeriesDescription}', image {header.InstanceNumber}"
    )
    texts = [str(i.TextValue) for i in sr.ContentSequence[-1].ContentSequence]
    assert slice_text in texts
    for obj in objects:
        assert obj.dataset.PatientID == study.reference().PatientID
        assert obj.dataset.StudyInstanceUID == phantom.study_instance_uid
