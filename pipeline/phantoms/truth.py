"""Ground truth of a target series: liver mask, caudate level, liver extent and volume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.phantoms.acquisition import Geometry, crop_rows, painted_for
from pipeline.phantoms.anatomy import BodyModel
from pipeline.phantoms.grid import AXIAL, SliceGrid, make_grid
from pipeline.phantoms.painter import paint
from pipeline.phantoms.tissues import LIVER_TISSUES, Tissue


def caudate_level_z(model: BodyModel) -> float:
    """Patient z (mm) of the axial level where the caudate lobe's cross-section is largest.

    The caudate lobe of the model (the part of the liver nearer the caudate ellipsoid than the
    other lobes, left-anterior of the IVC and behind the fissure for the ligamentum venosum) is
    sampled on 1.5 mm axial planes (2 mm pixels); the area profile, smoothed over 6 mm, peaks
    at the level.
    """
    c = model.to_patient(model.caudate.centre)
    n = round(2 * (max(model.caudate.radii[:2]) * 1.3 + model.warp_mm) / 2.0)
    slices = int(2 * model.caudate.radii[2] * 1.2 / 1.5) + 1
    grid = make_grid(
        AXIAL,
        c,
        rows=n,
        columns=n,
        fov_rows=n * 2.0,
        fov_columns=n * 2.0,
        slices=slices,
        spacing=1.5,
        thickness=1.5,
    )
    area = (paint(model, grid).labels == Tissue.CAUDATE).sum(axis=(1, 2)).astype(float)
    smooth = np.convolve(area, np.ones(4) / 4, mode="same")
    return float(grid.positions[int(np.argmax(smooth)), 2])


@dataclass(frozen=True, eq=False)
class Truth:
    mask: npt.NDArray[np.bool_]
    caudate_index: int
    extent: tuple[int, int] | None
    volume_ml: float
    grid: SliceGrid


def target_truth(model: BodyModel, geo: Geometry, role: str) -> Truth:
    """Mask (slices ascending along the normal), caudate index, extent and volume on the grid
    of the target series ``role`` (``ax_t2`` or ``ax_t2_fs``)."""
    rows = geo.axial.rows if role == "ax_t2" else geo.fs_rows
    grid, r0 = crop_rows(geo.axial, rows)
    labels = painted_for(model, geo, "axial").labels[:, r0 : r0 + rows]
    mask = np.isin(labels, np.asarray(LIVER_TISSUES, np.uint8))
    level = caudate_level_z(model)
    caudate = int(np.argmin(np.abs(grid.positions[:, 2] - level)))
    has = np.flatnonzero(mask.any(axis=(1, 2)))
    extent = (int(has[0]), int(has[-1])) if has.size else None
    voxel_ml = grid.pixel_spacing[0] * grid.pixel_spacing[1] * grid.spacing / 1000.0
    return Truth(mask, caudate, extent, float(mask.sum() * voxel_ml), grid)
