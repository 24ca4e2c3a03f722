"""The SEG: read back by highdicom, mask equal to the pipeline's frame by frame, in source order."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes

from pipeline.outputs import OutputOptions, build_outputs, build_seg, write_outputs
from pipeline.outputs.identity import agent_version
from pipeline.outputs.seg import source_frame_numbers
from pipeline.results import PipelineResult
from tests.pipeline.outputs.synthetic_mr import ellipse_mask, make_mr_series, make_result


def _write_and_read(
    tmp_path: Path, options: OutputOptions, n: int, size: int
) -> tuple[PipelineResult, hd.seg.Segmentation]:
    result = make_result(make_mr_series(n, size, size))
    objects = build_outputs(result, options)
    paths = write_outputs([o for o in objects if o.kind == "seg"], tmp_path)
    return result, hd.seg.segread(paths[0])


@pytest.mark.parametrize("omit", [False, True], ids=["keep-empty", "omit-empty"])
@pytest.mark.parametrize(
    "descending", [False, True], ids=["ascending-numbers", "descending-numbers"]
)
def test_mask_reads_back_frame_by_frame(tmp_path: Path, omit: bool, descending: bool) -> None:
    series = make_mr_series(12, 48, 40, descending_positions=descending)
    mask = ellipse_mask(12, 48, 40)
    mask[5, 3, 4] = True  # an isolated pixel: frames are not just a smooth shape
    result = make_result(series, mask=mask)
    assert result.volume is not None
    seg_obj = build_outputs(result, OutputOptions(omit_empty_frames=omit))[0]
    path = write_outputs([seg_obj], tmp_path)[0]
    seg = hd.seg.segread(path)

    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(result.volume.sop_instance_uids),
        segment_numbers=[1],
        combine_segments=True,
    )
    assert pixels.shape == mask.shape
    for k in range(mask.shape[0]):
        np.testing.assert_array_equal(pixels[k] > 0, mask[k], err_msg=f"frame of slice {k}")

    expected_frames = int(mask.any(axis=(1, 2)).sum()) if omit else mask.shape[0]
    assert int(seg.NumberOfFrames) == expected_frames
    # every kept slice has exactly one frame; highdicom orders frames monotonically along the
    # normal (it happens to go head to feet), and each frame references its own source slice
    frames = source_frame_numbers(seg)
    uids = [u for u in result.volume.sop_instance_uids if u in frames]
    assert len(uids) == expected_frames
    order = [frames[u] for u in uids]
    assert order in (list(range(1, expected_frames + 1)), list(range(expected_frames, 0, -1)))
    positions = [
        [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
        for f in seg.PerFrameFunctionalGroupsSequence
    ]
    index = {u: k for k, u in enumerate(result.volume.sop_instance_uids)}
    for uid in uids:
        np.testing.assert_allclose(positions[frames[uid] - 1], result.volume.positions[index[uid]])


def test_segment_codes_algorithm_and_identity(tmp_path: Path) -> None:
    result, seg = _write_and_read(tmp_path, OutputOptions(), n=8, size=32)
    volume = result.volume
    assert volume is not None
    assert seg.SegmentationType == "BINARY"
    assert seg.FrameOfReferenceUID == volume.frame_of_reference_uid
    assert seg.SeriesNumber == 9901
    assert seg.SeriesDescription == "AI Liver SEG - RESEARCH USE ONLY"
    assert seg.Manufacturer == "liver-agent"
    assert seg.ManufacturerModelName == "liver-segmentation"
    assert list(seg.SoftwareVersions) == [
        "liver-segmentation 1.2.0",
        f"liver-agent {agent_version()}",
    ]
    assert seg.DeviceSerialNumber == "0" * 16  # first 16 hex digits of the weights' sha256
    assert seg.SeriesInstanceUID != volume.series_instance_uid
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "Liver"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    prop = segment.SegmentedPropertyTypeCodeSequence[0]
    cat = segment.SegmentedPropertyCategoryCodeSequence[0]
    assert (prop.CodeValue, prop.CodingSchemeDesignator) == ("10200004", "SCT")
    assert (cat.CodeValue, cat.CodingSchemeDesignator) == ("91723000", "SCT")
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "liver-segmentation"
    assert algorithm.AlgorithmVersion == "1.2.0"
    family = algorithm.AlgorithmFamilyCodeSequence[0]
    assert (family.CodeValue, family.CodingSchemeDesignator) == (
        codes.DCM.ArtificialIntelligence.value,
        "DCM",
    )
    purposes = [
        item.PurposeOfReferenceCodeSequence[0].CodeValue
        for item in seg.ContributingEquipmentSequence
        if item.Manufacturer == "liver-agent"
    ]
    assert purposes == ["109102"]


def test_demo_bundle_is_visible_on_the_seg() -> None:
    result = make_result(
        make_mr_series(6, 32, 32), demo=True, mask=ellipse_mask(6, 32, 32, first=1, last=4)
    )
    seg = build_seg(result, software_version="9.9")
    assert seg.SeriesDescription == "DEMO AI Liver SEG - RESEARCH USE ONLY"
    assert seg.ContentDescription.startswith("DEMO MODEL")
    assert (
        "DEMO"
        in seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters
    )
    assert "liver-agent 9.9" in list(seg.SoftwareVersions)


def test_omit_with_an_empty_mask_keeps_the_frames() -> None:
    series = make_mr_series(4, 16, 16)
    result = make_result(series, mask=np.zeros((4, 16, 16), dtype=bool))
    seg = build_seg(result, software_version="1", omit_empty_frames=True)
    assert int(seg.NumberOfFrames) == 4
