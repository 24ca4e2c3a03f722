"""The liver outline on one slice as a closed polygon in DICOM image coordinates (SCOORD).

The outline is the 0.5 iso-line of the binary mask (marching squares, by contourpy), so it runs
half-way between liver and background pixel centres. DICOM image coordinates (PS3.3 C.18.6.1.1)
put the top left corner of the top left pixel at (0, 0) and its centre at (0.5, 0.5): a pixel
(row r, column c) has its centre at (c + 0.5, r + 0.5).
"""

from __future__ import annotations

import contourpy
import numpy as np
import numpy.typing as npt

from pipeline.errors import PipelineError


def _signed_area(points: npt.NDArray[np.float64]) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _drop_collinear(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Remove vertices that lie on the straight line through their neighbours (ring, open)."""
    before = np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0)
    cross = (points[:, 0] - before[:, 0]) * (after[:, 1] - points[:, 1]) - (
        points[:, 1] - before[:, 1]
    ) * (after[:, 0] - points[:, 0])
    keep = np.abs(cross) > 1e-9
    return points[keep] if keep.sum() >= 3 else points


def liver_outline(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """The outer boundary of the largest liver region of a slice, as a closed polygon.

    Parameters
    ----------
    mask
        Binary liver mask of one slice, shape (rows, columns).

    Returns
    -------
    numpy.ndarray
        (n, 2) float array of (column, row) DICOM image coordinates; the last vertex repeats
        the first (a closed polygon, PS3.3 C.18.6.1.2), at least 4 rows.

    Raises
    ------
    PipelineError
        ``output_encoding`` when the slice holds no liver.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (rows, columns), not {mask.ndim}-D")
    if not mask.any():
        raise PipelineError(
            "output_encoding", "the caudate-level slice has no liver pixels to outline"
        )
    # a zero border closes every line; a one-pixel region still gives a small diamond
    padded = np.pad(mask.astype(np.float64), 1)
    generator = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate)
    lines = [np.asarray(line, dtype=np.float64) for line in generator.lines(0.5)]
    closed = [line for line in lines if len(line) >= 4 and np.allclose(line[0], line[-1])]
    if not closed:
        raise PipelineError("output_encoding", "the liver outline could not be traced")
    # the largest enclosed area is the outer boundary of the largest region (holes are inside it)
    ring = max(closed, key=lambda line: abs(_signed_area(line[:-1])))[:-1]
    ring = _drop_collinear(ring)
    # undo the padding (-1) and move from pixel-centre indices to image coordinates (+0.5)
    ring = ring - 0.5
    return np.vstack([ring, ring[:1]])
