"""Image grids in patient coordinates (LPS, mm): where each series samples the body model."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
CORONAL = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0))
SAGITTAL = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))


@dataclass(frozen=True, eq=False)
class SliceGrid:
    """A stack of parallel slices whose cosines are patient axes (axial, coronal or sagittal).

    ``positions[k]`` is ImagePositionPatient of slice k (centre of the first pixel); slices are
    stored in ascending order along ``normal = row_cosine x column_cosine``.
    ``pixel_spacing`` is (between rows, between columns) as in DICOM PixelSpacing.
    """

    row_cosine: tuple[float, float, float]
    column_cosine: tuple[float, float, float]
    positions: F64  # (slices, 3)
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]
    thickness: float
    spacing: float

    @cached_property
    def normal(self) -> F64:
        out: F64 = np.cross(np.asarray(self.row_cosine), np.asarray(self.column_cosine))
        return out

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.positions), self.rows, self.columns

    def axes(self) -> tuple[F64, F64, F64]:
        """Patient x, y, z of every voxel as three arrays broadcastable to ``shape``.

        Each array varies along exactly one array axis (slices, rows or columns), which keeps the
        model evaluation separable and cheap.
        """
        row = np.asarray(self.row_cosine)
        col = np.asarray(self.column_cosine)
        j = np.arange(self.columns, dtype=np.float64) * self.pixel_spacing[1]
        i = np.arange(self.rows, dtype=np.float64) * self.pixel_spacing[0]
        out: list[F64] = []
        for a in range(3):
            if row[a] != 0.0:
                out.append((self.positions[0, a] + j * row[a]).reshape(1, 1, -1))
            elif col[a] != 0.0:
                out.append((self.positions[0, a] + i * col[a]).reshape(1, -1, 1))
            else:
                out.append(self.positions[:, a].reshape(-1, 1, 1).copy())
        return out[0], out[1], out[2]

    def slab(self, offsets: F64) -> SliceGrid:
        """One grid per offset along the normal, stacked: used to integrate thick slabs."""
        n = self.normal
        pos = self.positions[0][None, :] + offsets[:, None] * n[None, :]
        return SliceGrid(
            self.row_cosine,
            self.column_cosine,
            pos,
            self.rows,
            self.columns,
            self.pixel_spacing,
            self.thickness,
            float(offsets[1] - offsets[0]) if len(offsets) > 1 else self.spacing,
        )


def make_grid(
    plane: tuple[tuple[float, float, float], tuple[float, float, float]],
    centre: tuple[float, float, float],
    *,
    rows: int,
    columns: int,
    fov_rows: float,
    fov_columns: float,
    slices: int,
    spacing: float,
    thickness: float,
) -> SliceGrid:
    """A grid of ``slices`` slices centred on ``centre`` (mm), ascending along the normal.

    ``fov_rows`` is the extent along the column cosine (rows x row spacing), ``fov_columns`` the
    extent along the row cosine.
    """
    row = np.asarray(plane[0])
    col = np.asarray(plane[1])
    normal = np.cross(row, col)
    d_row = round(fov_rows / rows, 6)
    d_col = round(fov_columns / columns, 6)
    c = np.asarray(centre, dtype=np.float64)
    first = c - row * d_col * (columns - 1) / 2 - col * d_row * (rows - 1) / 2
    offsets = (np.arange(slices) - (slices - 1) / 2) * spacing
    positions = first[None, :] + offsets[:, None] * normal[None, :]
    return SliceGrid(
        plane[0],
        plane[1],
        np.asarray(np.round(positions, 4), dtype=np.float64),
        rows,
        columns,
        (d_row, d_col),
        thickness,
        spacing,
    )
