"""The TID 1500 SR read back by highdicom: finding, probability, measurements equal the result."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
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


@pytest.mark.parametrize(
    ("present", "probability"), [(True, 0.8734567891), (False, 0.0412)], ids=["present", "absent"]
)
def test_finding_and_probability_read_back(
    tmp_path: Path, present: bool, probability: float
) -> None:
    result = make_result(make_mr_series(10, 48, 48), present=present, probability=probability)
    _, sr = _build(tmp_path, result)
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    (group,) = report.get_image_measurement_groups()
    assert group.finding_type == codes.SCT.CirrhosisOfLiver
    (evaluation,) = group.get_qualitative_evaluations(name=codes.SCT.CirrhosisOfLiver)
    expected = codes.SCT.Present if present else codes.SCT.Absent
    assert evaluation.value == expected
    (prob,) = group.get_measurements(name=hd.sr.CodedConcept("122157", "DCM", "Probability"))
    assert prob.value == pytest.approx(probability, rel=1e-9)
    assert prob.unit == hd.sr.CodedConcept("1", "UCUM", "no units")
    # TID 4019 on the group: name and version of the bundle, family Artificial Intelligence
    items = {i.ConceptNameCodeSequence[0].CodeValue: i for i in group[0].ContentSequence}
    assert items["111001"].TextValue == "liver-classification"
    assert items["111003"].TextValue == "1.2.0"
    assert items["111000"].ConceptCodeSequence[0].CodeValue == "123110"
    # the caudate slice is the group's source image
    assert result.caudate is not None
    (source,) = group.source_images
    assert source.referenced_sop_instance_uid == result.caudate.sop_instance_uid


def test_volumetric_group_references_the_seg(tmp_path: Path) -> None:
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
    (area,) = group.get_measurements(name=codes.SCT.Area)
    (volume,) = group.get_measurements(name=codes.SCT.Volume)
    assert area.value == pytest.approx(result.caudate.liver_area_mm2)
    assert area.unit.value == "mm2"
    assert volume.value == pytest.approx(result.segmentation.volume_ml, rel=1e-6)
    assert volume.unit.value == "ml"
    # the tracking UID is shared with the SEG segment
    assert group.tracking_uid == seg.SegmentSequence[0].TrackingUID
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
    groups = report.get_image_measurement_groups()
    assert [g.finding_type for g in groups] == [codes.SCT.CirrhosisOfLiver, codes.SCT.Liver]
    assert result.segmentation is not None
    (volume,) = groups[1].get_measurements(name=codes.SCT.Volume)
    assert volume.value == pytest.approx(result.segmentation.volume_ml, rel=1e-6)
    # nothing in the report points at a SEG
    assert result.volume is not None
    mr_class = result.volume.headers[0].SOPClassUID
    assert {c for _, _, _, c in sr.get_evidence()} == {mr_class}
