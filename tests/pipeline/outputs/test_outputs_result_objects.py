"""build_outputs / write_outputs: options, identity of every object, atomic Part 10 files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydicom
import pytest

from pipeline.errors import PipelineError
from pipeline.outputs import OutputOptions, ResultObject, build_outputs, write_outputs
from pipeline.outputs.identity import PATIENT_STUDY_KEYWORDS
from tests.pipeline.outputs.synthetic_mr import (
    make_mr_series,
    make_not_evaluated,
    make_result,
    without_pixels,
)
from tests.pipeline.outputs.validation import assert_valid


def test_evaluated_defaults_make_seg_then_sr_referencing_it() -> None:
    objects = build_outputs(make_result(make_mr_series(8, 32, 32)))
    assert [o.kind for o in objects] == ["seg", "sr"]
    seg, sr = objects
    referenced = {
        (s.SeriesInstanceUID, ref.ReferencedSOPInstanceUID, ref.ReferencedSOPClassUID)
        for item in sr.dataset.CurrentRequestedProcedureEvidenceSequence
        for s in item.ReferencedSeriesSequence
        for ref in s.ReferencedSOPSequence
    }
    assert (seg.series_instance_uid, seg.sop_instance_uid, seg.sop_class_uid) in referenced
    assert len({seg.series_instance_uid, sr.series_instance_uid}) == 2


def test_options_choose_the_objects() -> None:
    result = make_result(make_mr_series(8, 32, 32))
    assert [o.kind for o in build_outputs(result, OutputOptions(sc=True))] == ["seg", "sr", "sc"]
    assert [o.kind for o in build_outputs(result, OutputOptions(sr=False))] == ["seg"]
    only_sc = OutputOptions(seg=False, sr=False, sc=True)
    assert [o.kind for o in build_outputs(result, only_sc)] == ["sc"]
    (sr_only,) = build_outputs(result, OutputOptions(seg=False, sr=True))
    assert sr_only.kind == "sr"
    # a not evaluated result never makes SEG/SR/SC
    ne = make_not_evaluated(make_mr_series(3, 16, 16), "liver_not_covered", "liver not covered")
    assert [o.kind for o in build_outputs(ne, OutputOptions(sc=True))] == ["not_evaluated_sr"]


def test_fresh_uids_each_run() -> None:
    result = make_result(make_mr_series(8, 32, 32))
    first = {o.sop_instance_uid for o in build_outputs(result)}
    second = {o.sop_instance_uid for o in build_outputs(result)}
    assert len(first) == 2
    assert not first & second


def test_patient_and_study_attributes_copied_to_every_object() -> None:
    series = make_mr_series(8, 32, 32)
    result = make_result(series)
    objects = build_outputs(result, OutputOptions(sc=True))
    objects += build_outputs(make_not_evaluated(series, "no_axial_t2", "no axial T2 series"))
    assert len(objects) == 4
    for obj in objects:
        for keyword in PATIENT_STUDY_KEYWORDS:
            assert str(obj.dataset[keyword].value) == str(series[0][keyword].value), (
                obj.kind,
                keyword,
            )
        assert obj.dataset.Manufacturer == "liver-agent"
        assert obj.dataset.SeriesNumber in (9901, 9902, 9903)
        assert obj.dataset.SeriesDescription.endswith("RESEARCH USE ONLY")
        assert "liver-agent" in {e.Manufacturer for e in obj.dataset.ContributingEquipmentSequence}


def test_source_without_type2_attributes_still_gives_valid_objects(tmp_path: Path) -> None:
    series = make_mr_series(8, 32, 32)
    missing = (
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyID",
        "PatientBirthDate",
        "PatientSex",
    )
    for ds in series:
        for keyword in missing:
            delattr(ds, keyword)
    result = make_result(series)
    result = dataclasses.replace(result, reference=without_pixels(series[0]))
    assert result.volume is not None
    paths = write_outputs(build_outputs(result, OutputOptions(sc=True)), tmp_path)
    # the pipeline's own headers are left as they were
    for header in (*result.volume.headers, result.reference):
        assert not any(keyword in header for keyword in missing)
    for path in paths:
        assert_valid(path)
        ds = pydicom.dcmread(path)
        for keyword in missing:
            assert keyword in ds, (path.name, keyword)
            assert ds[keyword].value in ("", None), (path.name, keyword)


def test_evaluated_result_without_parts_is_an_output_error() -> None:
    result = dataclasses.replace(make_result(make_mr_series(8, 32, 32)), segmentation=None)
    with pytest.raises(PipelineError) as info:
        build_outputs(result)
    assert info.value.code == "output_encoding"


def test_write_outputs_names_and_part10(tmp_path: Path) -> None:
    result = make_result(make_mr_series(8, 32, 32))
    objects = build_outputs(result, OutputOptions(sc=True))
    extra_sc = build_outputs(result, OutputOptions(seg=False, sr=False, sc=True))[0]
    out = tmp_path / "new" / "dir"
    paths = write_outputs([*objects, extra_sc], out)
    names = [p.name for p in paths]
    assert names[:2] == ["seg.dcm", "sr.dcm"]
    assert names[2:] == [
        f"sc-{objects[2].sop_instance_uid}.dcm",
        f"sc-{extra_sc.sop_instance_uid}.dcm",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temp files left
    for path, obj in zip(paths, [*objects, extra_sc], strict=True):
        raw = path.read_bytes()
        assert raw[128:132] == b"DICM"
        back = pydicom.dcmread(path)
        assert back.SOPInstanceUID == obj.sop_instance_uid
        assert back.file_meta.MediaStorageSOPInstanceUID == obj.sop_instance_uid


def test_write_outputs_replaces_a_previous_file(tmp_path: Path) -> None:
    result = make_result(make_mr_series(8, 32, 32))
    (tmp_path / "seg.dcm").write_bytes(b"old")
    seg = build_outputs(result, OutputOptions(sr=False))
    write_outputs(seg, tmp_path)
    assert pydicom.dcmread(tmp_path / "seg.dcm").SOPInstanceUID == seg[0].sop_instance_uid


def test_result_object_rejects_unknown_kind() -> None:
    ds = build_outputs(make_result(make_mr_series(8, 32, 32)), OutputOptions(sr=False))[0].dataset
    with pytest.raises(ValueError, match="kind"):
        ResultObject("pdf", ds)
