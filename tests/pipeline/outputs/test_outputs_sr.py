"""The TID 1500 SR read back by highdicom: finding, probability, measurements equal the result."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pipeline.outputs import OutputOptions, build_outputs, write_outputs
from pipeline.results import PipelineResult
from tests.pipeline.outputs.synthetic_mr import make_mr_series, make_result


def _build(tmp_path: Path, result: PipelineResult) -> tuple[Dataset, hd.sr.Comprehensive3DSR]:
    objects = build_outputs(result, OutputOptions())
    paths = write_outputs(objects, tmp_path)
    seg = hd.seg.segread(paths[0])
    sr = hd.sr.srread(paths[1])
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    return seg, sr


def _texts(item: Dataset) -> list[str]:
    out = []
    for child in item.get("ContentSequence", []):
        if child.ValueType == "TEXT":
            out.append(str(child.TextValue))
        out += _texts(child)
    return out


PROBABILITY = hd.sr.CodedConcept("122157", "DCM", "Probability of cirrhosis")


def _caudate_group(
    sr: hd.sr.Comprehensive3DSR,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    # the finding lives in the one TID 1410 planar ROI group; no image-level (TID 1501) group
    # is left without coordinates
    assert report.get_image_measurement_groups() == []
    (group,) = report.get_planar_roi_measurement_groups()
    return group


@pytest.mark.parametrize(
    ("present", "probability"), [(True, 0.8734567891), (False, 0.0412)], ids=["present", "absent"]
)
def test_finding_and_probability_read_back(
    tmp_path: Path, present: bool, probability: float
) -> None:
    result = make_result(make_mr_series(10, 48, 48), present=present, probability=probability)
    _, sr = _build(tmp_path, result)
    group = _caudate_group(sr)
    assert group.finding_type == codes.SCT.CirrhosisOfLiver
    (evaluation,) = group.get_qualitative_evaluations(name=codes.SCT.CirrhosisOfLiver)
    expected = codes.SCT.Present if present else codes.SCT.Absent
    assert evaluation.value == expected
    # DCM 122157 named for a viewer's label, in percent (a unit viewers print as "%")
    (prob,) = group.get_measurements(name=PROBABILITY)
    assert prob.name.meaning == "Probability of cirrhosis"
    assert prob.value == pytest.approx(100 * probability, rel=1e-9)
    assert prob.unit == hd.sr.CodedConcept("%", "UCUM", "percent")
    # TID 4019 on the group: name and version of the bundle, family Artificial Intelligence
    items = {i.ConceptNameCodeSequence[0].CodeValue: i for i in group[0].ContentSequence}
    assert items["111001"].TextValue == "liver-classification"
    assert items["111003"].TextValue == "1.2.0"
    assert items["111000"].ConceptCodeSequence[0].CodeValue == "123110"
    # the outline is drawn on the caudate slice
    assert result.caudate is not None
    roi = group.roi
    assert roi is not None
    (selected,) = roi.ContentSequence
    assert selected.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        result.caudate.sop_instance_uid
    )


def test_caudate_group_outline_and_area_read_back(tmp_path: Path) -> None:
    result = make_result(make_mr_series(10, 48, 48))
    _, sr = _build(tmp_path, result)
    group = _caudate_group(sr)
    assert result.caudate is not None
    assert result.segmentation is not None
    (area,) = group.get_measurements(name=codes.SCT.Area)
    assert area.value == pytest.approx(result.caudate.liver_area_mm2)
    assert area.unit.value == "mm2"
    # the area comes from the segmentation model (TID 4019 on the measurement)
    names = [
        i.TextValue
        for i in area[0].ContentSequence
        if i.ConceptNameCodeSequence[0].CodeValue == "111001"
    ]
    assert names == ["liver-segmentation"]
    # the outline: one closed polyline around the liver pixels of the caudate slice
    roi = group.roi
    assert roi is not None
    assert roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    points = roi.value
    assert points.shape[1] == 2
    assert len(points) >= 4
    np.testing.assert_array_equal(points[0], points[-1])
    mask = result.segmentation.mask[result.caudate.index]
    rows, cols = np.nonzero(mask)
    # every vertex lies half-way between a liver pixel centre and a background one
    assert points[:, 0].min() == pytest.approx(cols.min())
    assert points[:, 0].max() == pytest.approx(cols.max() + 1)
    assert points[:, 1].min() == pytest.approx(rows.min())
    assert points[:, 1].max() == pytest.approx(rows.max() + 1)
    x, y = points[:-1, 0], points[:-1, 1]
    enclosed = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    assert result.volume is not None
    pixel_mm2 = result.volume.pixel_spacing[0] * result.volume.pixel_spacing[1]
    # the polygon cuts the liver pixels' corners: its area is within a perimeter's half-pixels
    assert enclosed * pixel_mm2 == pytest.approx(result.caudate.liver_area_mm2, rel=0.1)


def test_every_group_shares_a_tracked_finding_with_coordinates(tmp_path: Path) -> None:
    # viewers (OHIF) merge groups by Tracking UID and need image coordinates in each merged one
    for options in (OutputOptions(), OutputOptions(seg=False)):
        objects = build_outputs(make_result(make_mr_series(10, 48, 48)), options)
        sr = next(o.dataset for o in objects if o.kind == "sr")
        (measurements,) = [
            i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"
        ]
        with_coordinates: set[str] = set()
        tracking: list[str] = []
        for group in measurements.ContentSequence:
            uids = [str(i.UID) for i in group.ContentSequence if i.ValueType == "UIDREF"]
            tracking.append(uids[0])
            if any(i.ValueType == "SCOORD" for i in group.ContentSequence):
                with_coordinates.add(uids[0])
        assert len(tracking) == 2
        assert set(tracking) <= with_coordinates


def test_volumetric_group_references_the_seg(tmp_path: Path) -> None:
    # structure change (issue 16): the area moved to the TID 1410 caudate group; the TID 1411
    # group keeps the volume and the SEG reference, in the same tracked finding
    result = make_result(make_mr_series(10, 48, 48))
    seg, sr = _build(tmp_path, result)
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    (group,) = report.get_volumetric_roi_measurement_groups()
    segment = group.referenced_segment
    assert segment is not None
    assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert segment.referenced_sop_class_uid == seg.SOPClassUID
    assert segment.referenced_segment_numbers == [1]
    assert group.finding_type == codes.SCT.Liver
    assert result.caudate is not None
    assert result.segmentation is not None
    (volume,) = group.get_measurements(name=codes.SCT.Volume)
    assert volume.value == pytest.approx(result.segmentation.volume_ml, rel=1e-6)
    assert volume.unit.value == "ml"
    assert group.get_measurements(name=codes.SCT.Area) == []
    # the tracking UID is shared with the SEG segment and with the caudate group
    assert group.tracking_uid == seg.SegmentSequence[0].TrackingUID
    assert _caudate_group(sr).tracking_uid == group.tracking_uid
    # evidence lists the SEG and the caudate slice
    evidence = {uid for _, _, uid, _ in sr.get_evidence()}
    assert evidence == {seg.SOPInstanceUID, result.caudate.sop_instance_uid}


def test_report_header_observer_library_and_text(tmp_path: Path) -> None:
    result = make_result(make_mr_series(10, 48, 48), demo=True, mode="whole")
    _, sr = _build(tmp_path, result)
    assert sr.CompletionFlag == "COMPLETE"
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.SeriesNumber == 9902
    assert sr.SeriesDescription == "DEMO AI Liver SR - RESEARCH USE ONLY"
    assert sr.ManufacturerModelName == "liver-classification-demo"
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    (observer,) = report.get_observer_contexts(observer_type=codes.DCM.Device)
    attrs = observer.observer_identifying_attributes
    assert isinstance(attrs, hd.sr.DeviceObserverIdentifyingAttributes)
    assert attrs.model_name == "liver-classification-demo"
    assert attrs.manufacturer_name == "liver-agent"
    assert result.volume is not None
    assert result.caudate is not None
    header = result.volume.headers[result.caudate.index]
    texts = _texts(sr)
    assert f"Caudate-level slice: series 5 'T2 SPIR TRA', image {header.InstanceNumber}" in texts
    assert any(t.startswith("Classification mode: whole slice") for t in texts)
    assert any(t.startswith("DEMO MODEL") for t in texts)
    assert any(t.startswith("RESEARCH USE ONLY") for t in texts)
    # image library (TID 1600) holds the caudate slice
    library = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "111028"]
    assert len(library) == 1
    images = [
        img.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for group in library[0].ContentSequence
        for img in group.ContentSequence
        if img.ValueType == "IMAGE"
    ]
    assert images == [result.caudate.sop_instance_uid]


def test_masked_mode_is_not_called_whole(tmp_path: Path) -> None:
    _, sr = _build(tmp_path, make_result(make_mr_series(10, 48, 48), mode="masked"))
    texts = _texts(sr)
    assert not any("whole slice" in t for t in texts)
    assert not any("DEMO" in t for t in texts)


def test_sr_without_seg_keeps_the_liver_measurements(tmp_path: Path) -> None:
    result = make_result(make_mr_series(10, 48, 48))
    (obj,) = build_outputs(result, OutputOptions(seg=False))
    (path,) = write_outputs([obj], tmp_path)
    sr = hd.sr.srread(path)
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    assert report.get_volumetric_roi_measurement_groups() == []
    (caudate,) = report.get_planar_roi_measurement_groups()
    assert caudate.finding_type == codes.SCT.CirrhosisOfLiver
    (liver,) = report.get_image_measurement_groups()
    assert liver.finding_type == codes.SCT.Liver
    assert liver.tracking_uid == caudate.tracking_uid
    assert result.segmentation is not None
    assert result.caudate is not None
    (volume,) = liver.get_measurements(name=codes.SCT.Volume)
    assert volume.value == pytest.approx(result.segmentation.volume_ml, rel=1e-6)
    (area,) = caudate.get_measurements(name=codes.SCT.Area)
    assert area.value == pytest.approx(result.caudate.liver_area_mm2)
    # nothing in the report points at a SEG
    assert result.volume is not None
    mr_class = result.volume.headers[0].SOPClassUID
    assert {c for _, _, _, c in sr.get_evidence()} == {mr_class}
