"""Segmentation metrics of one case: Dice, 95th-percentile Hausdorff distance and mean surface
distance in millimetres (MONAI's implementations, with the voxel spacing), liver volumes and
the volume error."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]


def dice(pred: np.ndarray[Any, Any], truth: np.ndarray[Any, Any]) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


@dataclass(frozen=True)
class CaseMetrics:
    """How one predicted liver mask compares with its label.

    ``hd95_mm`` and ``mean_surface_mm`` are None when either mask is empty (no surface to
    measure from); ``volume_error_pct`` is None when the label is empty.
    """

    dice: float
    hd95_mm: float | None
    mean_surface_mm: float | None
    volume_ml: float
    label_volume_ml: float

    @property
    def volume_error_ml(self) -> float:
        """Predicted minus labelled volume (negative: under-segmentation)."""
        return self.volume_ml - self.label_volume_ml

    @property
    def volume_error_pct(self) -> float | None:
        if self.label_volume_ml == 0:
            return None
        return 100.0 * self.volume_error_ml / self.label_volume_ml


def surface_distances_mm(
    pred: BoolArray, truth: BoolArray, spacing: tuple[float, float, float]
) -> tuple[float | None, float | None]:
    """Symmetric 95th-percentile Hausdorff distance and symmetric mean surface distance (mm).

    Uses ``monai.metrics.compute_hausdorff_distance`` (percentile 95, both directions, the larger)
    and ``compute_average_surface_distance`` (symmetric: the mean over the surface voxels of both
    masks of the distance to the other surface); surfaces are the masks' edge voxels, distances
    Euclidean with ``spacing`` (along axis 0, 1, 2, mm). None for both when a mask is empty.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {truth.shape}")
    if not pred.any() or not truth.any():
        return None, None
    import torch
    from monai.metrics.hausdorff_distance import compute_hausdorff_distance
    from monai.metrics.surface_distance import compute_average_surface_distance

    p = torch.from_numpy(np.ascontiguousarray(pred))[None, None]
    t = torch.from_numpy(np.ascontiguousarray(truth))[None, None]
    hd95 = float(compute_hausdorff_distance(p, t, percentile=95, spacing=spacing).item())
    msd = float(compute_average_surface_distance(p, t, symmetric=True, spacing=spacing).item())
    return (None if math.isnan(hd95) else hd95), (None if math.isnan(msd) else msd)


def case_metrics(
    pred: BoolArray, truth: BoolArray, spacing: tuple[float, float, float]
) -> CaseMetrics:
    """Dice, HD95, mean surface distance and volumes of one case.

    Parameters
    ----------
    pred, truth
        Binary masks (slices, rows, columns).
    spacing
        Voxel size along (slices, rows, columns) in mm.
    """
    hd95, msd = surface_distances_mm(pred, truth, spacing)
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    return CaseMetrics(
        dice=dice(pred, truth),
        hd95_mm=hd95,
        mean_surface_mm=msd,
        volume_ml=float(pred.sum()) * voxel_ml,
        label_volume_ml=float(truth.sum()) * voxel_ml,
    )
