"""Typed results of the phantom generator: one written study, its series, and in-memory volumes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from pipeline.input_distribution import AcquisitionValues

Vendor = Literal["siemens", "ge", "philips"]
VENDORS: tuple[Vendor, ...] = ("siemens", "ge", "philips")

#: Every series role the generator can write, in acquisition (SeriesNumber) order.
ALL_ROLES: tuple[str, ...] = (
    "localizer",
    "cor_t2",
    "ax_t2",
    "ax_t2_fs",
    "t1_in_opp",
    "t2star",
    "mrcp",
    "dwi",
    "adc",
    "dyn_pre",
    "dyn_arterial",
    "dyn_portal",
    "dyn_delayed",
)

#: Roles a series selector may choose, best first. The target of a study is the first of these it
#: contains: the single-shot axial T2 without fat suppression ("ax_t2": HASTE / SSFSE / SSh TSE);
#: when a study has none, the fat-suppressed axial T2 ("ax_t2_fs": TSE FS / FRFSE FS / SPAIR), which
#: is what the real test data (CHAOS T2-SPIR) are. A study with neither has no target.
TARGET_ROLES: tuple[str, ...] = ("ax_t2", "ax_t2_fs")


@dataclass(frozen=True)
class PhantomSeries:
    """One written series: its UID, what it is, and its files in InstanceNumber order."""

    series_instance_uid: str
    role: str
    description: str  # SeriesDescription as written
    files: tuple[Path, ...]


@dataclass(frozen=True, eq=False)
class PhantomStudy:
    """A written phantom study and the ground truth for its target series.

    ``liver_mask`` is boolean ``(slices, rows, columns)`` on the target series' grid with slices
    sorted by ascending ``dot(ImagePositionPatient, normal)``, ``normal = row x column`` cosines
    (for axial images: feet to head, whatever order the vendor numbered them in).
    ``caudate_index`` and ``liver_extent`` index that same order; ``liver_volume_ml`` is the mask's
    voxel count times pixel area times SpacingBetweenSlices.
    """

    path: Path
    study_instance_uid: str
    vendor: str
    cirrhotic: bool
    ascites: bool
    seed: int
    series: tuple[PhantomSeries, ...]
    target_series_uid: str | None
    liver_mask: npt.NDArray[np.bool_] | None
    caudate_index: int | None
    liver_extent: tuple[int, int] | None
    liver_volume_ml: float | None

    def series_by_role(self, role: str) -> PhantomSeries:
        """The series of the given role; ``KeyError`` when the study has none."""
        for series in self.series:
            if series.role == role:
                return series
        raise KeyError(role)

    @property
    def target_role(self) -> str | None:
        """Role of the target series, or None when the study has no axial T2."""
        for series in self.series:
            if series.series_instance_uid == self.target_series_uid:
                return series.role
        return None


@dataclass(frozen=True, eq=False)
class PhantomVolume:
    """An axial T2 volume made in memory (no DICOM), with its ground truth.

    Slices are sorted ascending along the normal (feet to head), as for ``PhantomStudy``.
    ``image`` is in arbitrary units (stored-value scale, noise included).
    """

    image: npt.NDArray[np.float32]
    liver_mask: npt.NDArray[np.bool_]
    caudate_index: int
    liver_extent: tuple[int, int]
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    cirrhotic: bool
    liver_volume_ml: float = 0.0
    fat_suppressed: bool = False
    acquisition: AcquisitionValues | None = None  # what its DICOM headers would say
