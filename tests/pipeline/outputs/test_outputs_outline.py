"""The liver outline of one slice: a closed polygon around the largest region, image coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.outputs.outline import liver_outline


def _area(points: np.ndarray) -> float:
    x, y = points[:-1, 0], points[:-1, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def test_rectangle_outline_in_image_coordinates() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:7] = True  # rows 2..4, columns 3..6
    points = liver_outline(mask)
    np.testing.assert_array_equal(points[0], points[-1])
    # half-way between pixel centres: columns 3..6 span x 3..7 at the edges (centres + 0.5)
    assert points[:, 0].min() == 3.0
    assert points[:, 0].max() == 7.0
    assert points[:, 1].min() == 2.0
    assert points[:, 1].max() == 5.0
    # 12 pixels; marching squares cuts each of the 4 corners by half a pixel's triangle
    assert _area(points) == pytest.approx(12 - 4 * 0.125)
    # collinear vertices are dropped: 4 sides with cut corners = 8 vertices (+ the repeat)
    assert len(points) == 9


def test_largest_region_wins_and_holes_are_ignored() -> None:
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:30, 5:30] = True
    mask[12:18, 12:18] = False  # a hole (vessel) inside the liver
    mask[33:36, 33:36] = True  # a small separate island
    points = liver_outline(mask)
    assert points[:, 0].min() == 5.0
    assert points[:, 0].max() == 30.0
    assert _area(points) == pytest.approx(25 * 25 - 0.5)


def test_single_pixel_and_empty_slice() -> None:
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 2] = True
    points = liver_outline(mask)
    assert len(points) == 5
    assert _area(points) == pytest.approx(0.5)
    with pytest.raises(PipelineError) as info:
        liver_outline(np.zeros((5, 5), dtype=bool))
    assert info.value.code == "output_encoding"
