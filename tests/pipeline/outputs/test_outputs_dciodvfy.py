"""Every object build_outputs writes passes dciodvfy with no errors, for each kind of input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.outputs import OutputOptions, build_outputs, write_outputs
from pipeline.results import PipelineResult
from tests.pipeline.outputs.synthetic_mr import (
    ellipse_mask,
    make_mr_series,
    make_not_evaluated,
    make_result,
)
from tests.pipeline.outputs.validation import DCIODVFY, assert_valid, dciodvfy


def _positive() -> PipelineResult:
    return make_result(make_mr_series(), present=True, probability=0.91)


def _negative() -> PipelineResult:
    return make_result(make_mr_series(), present=False, probability=0.08)


def _demo_whole() -> PipelineResult:
    return make_result(make_mr_series(), demo=True, mode="whole", probability=0.55)


def _descending_512() -> PipelineResult:
    series = make_mr_series(6, 512, 512, descending_positions=True)
    return make_result(
        series, present=False, probability=0.3, mask=ellipse_mask(6, 512, 512, first=1, last=4)
    )


def _not_evaluated() -> PipelineResult:
    # as long as the agent's reasons: the statement is wrapped (CR LF in the TEXT value)
    reason = (
        "no axial T2-weighted series in the study (t2_haste_cor_mbh: coronal (normal 0 deg "
        "from y); localizer: images in several planes (axial, coronal, sagittal))"
    )
    return make_not_evaluated(make_mr_series(4, 32, 32), "no_axial_t2", reason)


CASES = [
    ("positive-sc-keep", _positive, OutputOptions(sc=True), {"seg", "sr", "sc"}),
    ("positive-nosc-omit", _positive, OutputOptions(omit_empty_frames=True), {"seg", "sr"}),
    (
        "negative-sc-omit",
        _negative,
        OutputOptions(sc=True, omit_empty_frames=True),
        {"seg", "sr", "sc"},
    ),
    ("negative-nosc-keep", _negative, OutputOptions(), {"seg", "sr"}),
    ("demo-whole-sc", _demo_whole, OutputOptions(sc=True), {"seg", "sr", "sc"}),
    ("descending-512", _descending_512, OutputOptions(sc=True), {"seg", "sr", "sc"}),
    ("sr-without-seg", _positive, OutputOptions(seg=False, sc=True), {"sr", "sc"}),
    ("all-with-kos", _demo_whole, OutputOptions(sc=True, kos=True), {"seg", "sr", "sc", "kos"}),
    ("kos-only", _negative, OutputOptions(seg=False, sr=False, kos=True), {"kos"}),
    ("not-evaluated", _not_evaluated, OutputOptions(sc=True, kos=True), {"not_evaluated_sr"}),
]


def test_dciodvfy_flags_an_invalid_object(tmp_path: Path) -> None:
    # the oracle itself must be able to fail: a SEG without its Segment Sequence is invalid
    objects = build_outputs(_positive())
    seg = objects[0].dataset
    del seg.SegmentSequence
    path = tmp_path / "broken.dcm"
    seg.save_as(path, enforce_file_format=True)
    errors, output = dciodvfy(path)
    assert errors, output


@pytest.mark.parametrize(
    ("make", "options", "kinds"),
    [pytest.param(make, options, kinds, id=name) for name, make, options, kinds in CASES],
)
def test_every_written_object_passes_dciodvfy(
    tmp_path: Path, make: object, options: OutputOptions, kinds: set[str]
) -> None:
    assert DCIODVFY.exists(), "dicom3tools is not installed (apt-get install dicom3tools)"
    assert callable(make)
    result = make()
    objects = build_outputs(result, options)
    assert {o.kind for o in objects} == kinds
    paths = write_outputs(objects, tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{k}.dcm" for k in kinds)
    for path in paths:
        assert_valid(path)
        back = pydicom.dcmread(path)
        assert back.StudyInstanceUID == result.study_instance_uid
    if result.segmentation is not None and options.omit_empty_frames:
        seg = pydicom.dcmread(tmp_path / "seg.dcm")
        assert int(seg.NumberOfFrames) == int(
            np.count_nonzero(result.segmentation.mask.any(axis=(1, 2)))
        )
