"""The Secondary Capture: RGB 8-bit, outline and result text burned in, source slice referenced."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import features
from pydicom.uid import SecondaryCaptureImageStorage

from pipeline.heatmap import HeatMap
from pipeline.outputs import build_sc
from pipeline.outputs.render import (
    OUTLINE_RGB,
    TextLine,
    heat_colours,
    load_font,
    render_heatmap,
    render_overlay,
)
from pipeline.results import EvaluatedResult
from tests.pipeline.outputs.synthetic_mr import make_mr_series, make_result
from tests.pipeline.outputs.validation import assert_valid


def test_pillow_has_freetype_offline() -> None:
    # ImageFont.load_default(size=...) is only scalable with FreeType; the font is built in
    assert features.check("freetype2")
    small, large = load_font(10), load_font(30)
    assert large.getbbox("Liver")[3] > small.getbbox("Liver")[3]


@pytest.mark.parametrize("demo", [False, True], ids=["bundle", "demo-bundle"])
def test_sc_is_rgb_with_outline_and_text(demo: bool) -> None:
    result = make_result(make_mr_series(10, 64, 64), demo=demo)
    sc = build_sc(result, software_version="0.1.0")
    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    assert (sc.SamplesPerPixel, sc.BitsAllocated, sc.PhotometricInterpretation) == (3, 8, "RGB")
    assert sc.BurnedInAnnotation == "YES"
    assert sc.SeriesNumber == 9903
    expected = "AI Liver SC - RESEARCH USE ONLY"
    assert sc.SeriesDescription == ("DEMO " + expected if demo else expected)
    assert result.caudate is not None
    assert result.volume is not None
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == result.caudate.sop_instance_uid
    assert ("DEMO MODEL" in sc.DerivationDescription) is demo
    pixels = sc.pixel_array
    assert pixels.dtype == np.uint8
    assert pixels.shape[2] == 3
    # scaled to >= 512 wide, image on top, text panel below
    assert pixels.shape[1] == 512
    assert pixels.shape[0] > 512
    image, panel = pixels[:512], pixels[512:]
    outline = np.all(image == OUTLINE_RGB, axis=2)
    assert outline.sum() > 100
    # the outline lies on the border of the liver mask (scaled by 8)
    assert result.segmentation is not None
    caudate_mask = result.segmentation.mask[result.caudate.index]
    mask = np.kron(caudate_mask.astype(np.uint8), np.ones((8, 8), dtype=np.uint8)) > 0
    assert mask[outline].all()
    assert not outline[mask.shape[0] // 2, :].all()
    assert (panel.max(axis=2) > 128).sum() > 500  # text was drawn
    red = np.all(panel == (255, 90, 80), axis=2).sum()
    assert bool(red > 0) == demo  # the DEMO MODEL line is red


def test_render_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="equal 2-D shapes"):
        render_overlay(np.zeros((4, 4)), np.zeros((4, 5), dtype=bool), [TextLine("x")])


def test_constant_image_renders_black_not_nan() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    rgb = render_overlay(np.full((8, 8), 7.0), mask, [TextLine("flat")], min_size=64)
    assert rgb.shape[1] == 64
    assert np.all(rgb[:64][~np.all(rgb[:64] == OUTLINE_RGB, axis=2)] == 0)


def _with_heat(result: EvaluatedResult) -> tuple[EvaluatedResult, np.ndarray]:
    """The result with a heat map that is hot in a square at the slice's top left only."""
    assert result.volume is not None
    cam = np.zeros(result.volume.pixels.shape[1:], dtype=np.float32)
    cam[4:20, 4:20] = 1.0
    heat = HeatMap(cam=cam, layer="layer3", class_index=1, share_in_liver=0.25)
    return replace(result, heatmap=heat), cam


def test_sc_burns_the_heat_map_in_only_when_asked(tmp_path: Path) -> None:
    base = make_result(make_mr_series(10, 64, 64))
    assert isinstance(base, EvaluatedResult)
    result, cam = _with_heat(base)
    plain = build_sc(result, software_version="0.1.0").pixel_array[:512]
    heated_sc = build_sc(result, software_version="0.1.0", heatmap=True)
    heated = heated_sc.pixel_array[:512]
    hot = np.kron(cam, np.ones((8, 8))) > 0
    changed = np.any(plain != heated, axis=2)
    assert changed[hot].mean() > 0.9  # coloured where the heat is
    assert not changed[~hot].any()  # untouched elsewhere
    assert (heated[hot][:, 0].astype(int) - heated[hot][:, 2].astype(int)).mean() > 50  # red
    assert "heat map" in heated_sc.DerivationDescription
    assert "heat map" not in build_sc(result, software_version="0.1.0").DerivationDescription
    path = tmp_path / "sc.dcm"
    heated_sc.save_as(path, enforce_file_format=True)
    assert_valid(path)


def test_heat_colours_run_from_blue_to_red() -> None:
    colours = heat_colours(np.array([0.0, 1.0]))
    assert colours[0].argmax() == 2  # blue
    assert colours[1].argmax() == 0  # red
    with pytest.raises(ValueError, match="one shape"):
        render_heatmap(np.zeros((4, 4)), None, np.zeros((4, 5)))
