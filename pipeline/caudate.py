"""Find the axial slice at the level of the caudate lobe from the liver-area profile of a series."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.errors import NotEvaluatedError
from pipeline.results import CaudateSlice, LiverSegmentation, Volume

logger = logging.getLogger(__name__)

DEFAULT_FRACTION = 0.45
"""Caudate level as a fraction of the liver's cranio-caudal extent, from the top (settings key
``pipeline.caudate_fraction``)."""

MIN_LIVER_AREA_MM2 = 500.0
"""A slice counts as liver when its segmented liver area is at least this (5 cm2). The liver's
largest axial section is 100-250 cm2; the tip of the dome or of the right lobe is below 5 cm2."""

WINDOW_MM = 10.0
"""Half-width of the window around the fraction's position in which the largest area is taken."""

EDGE_AREA_FRACTION = 0.5
"""The liver is cut by the series when its end slice at the series' edge has at least this
fraction of the largest slice area (a liver that ends naturally tapers to a few cm2)."""

MIN_LIVER_SLICES = 4
"""Fewest slices with liver for the level to be located."""

MAX_BRIDGED_GAP = 1
"""Runs of liver slices separated by this many slices below the threshold are one run (a slice
where the segmentation missed the liver does not split the organ)."""

AXIAL_MIN_NORMAL_Z = 0.5
"""The slice normal's cranio-caudal (z) component must be at least this for an axial series."""


@dataclass(frozen=True)
class LiverExtent:
    """The liver's run of slices, in volume indices; ``top`` is the most cranial slice."""

    top: int
    bottom: int

    @property
    def first(self) -> int:
        return min(self.top, self.bottom)

    @property
    def last(self) -> int:
        return max(self.top, self.bottom)

    @property
    def slices(self) -> int:
        return self.last - self.first + 1


def caudate_slice(
    volume: Volume,
    segmentation: LiverSegmentation,
    *,
    fraction: float = DEFAULT_FRACTION,
    min_liver_area_mm2: float = MIN_LIVER_AREA_MM2,
    window_mm: float = WINDOW_MM,
    edge_area_fraction: float = EDGE_AREA_FRACTION,
    min_liver_slices: int = MIN_LIVER_SLICES,
) -> CaudateSlice:
    """Choose the slice at the level of the caudate lobe.

    Anatomy. The caudate lobe (Couinaud segment I) lies posteriorly between the inferior vena
    cava and the fissure for the ligamentum venosum, in the upper-middle part of the liver: from
    just below the confluence of the hepatic veins down to the porta hepatis, where its caudate
    process meets the right lobe. On axial slices this is the level where the liver's area is near
    its largest, a few centimetres below the dome. The published method (cirrhosis on T2-weighted
    MRI) classifies one axial slice at this level; it shows the caudate lobe beside the right and
    left lobes and the liver surface, where cirrhosis changes shape (caudate hypertrophy,
    right-lobe atrophy, nodular surface).

    Rule. From the liver-area profile (one area per slice):

    1. The liver's cranio-caudal extent is the run of slices whose liver area is at least
       ``min_liver_area_mm2``; runs split by one slice below it are joined, and of several runs
       the one with the most area wins (a false-positive blob elsewhere is ignored). The
       cranial end is the one with the larger patient z (DICOM LPS coordinates: +z is
       superior).
    2. The target is the position at ``fraction`` of the extent from its top (cranial) slice.
    3. The chosen slice is the one with the largest liver area within ``window_mm`` of the target
       (ties: the one closest to the target), so a slice where the segmentation under-reads the
       liver is not chosen.

    Checked on the 15 CHAOS T2-SPIR subjects with their manual liver labels (slice 7.7 mm): the
    largest liver area lies at 0.25-0.44 (mean 0.34) of the extent from the top, at the level of
    the hepatic veins; the caudate lobe, read on the images, spans about 0.35-0.55. With
    ``fraction`` 0.45 and a 10 mm window the chosen slices fall at 0.38-0.45 from the top, and
    every one shows the caudate lobe (in one subject its caudate process at the porta hepatis;
    per-subject table in docs/benchmarks.md, "Caudate level on the CHAOS labels").

    Parameters
    ----------
    volume
        The series, sorted along its slice normal.
    segmentation
        The liver mask of ``volume`` with its area per slice.
    fraction
        Caudate level as a fraction of the extent from the top, in (0, 1).
    min_liver_area_mm2
        Smallest liver area for a slice to count in the extent.
    window_mm
        Half-width of the refinement window; 0 takes the slice nearest the target.
    edge_area_fraction
        The liver is cut by the series when its slice at the first or last slice of the series
        has at least this fraction of the largest area.
    min_liver_slices
        Fewest slices in the liver's run.

    Returns
    -------
    CaudateSlice
        The chosen index (into ``volume``), its SOP Instance UID, its liver area, the whole area
        profile, the liver's first and last indices (ascending) and the rule in words.

    Raises
    ------
    NotEvaluatedError
        ``liver_not_covered`` when no liver is found, when it is on fewer than
        ``min_liver_slices`` slices, or when the series cuts through the liver at either end
        (the extent, and so the level, are unknown); ``unsupported_image`` when the series is
        not axial.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie between 0 and 1, not {fraction}")
    profile = np.asarray(segmentation.area_mm2, dtype=np.float64)
    n = volume.shape[0]
    if profile.shape != (n,):
        raise ValueError(f"the area profile has {profile.size} values for {n} slices")
    cranial_last = _cranial_is_last(volume)
    extent = liver_extent(profile, min_liver_area_mm2, cranial_last=cranial_last)
    uid = volume.series_instance_uid
    if extent is None:
        raise NotEvaluatedError(
            "liver_not_covered",
            f"no liver found in series {uid}: no slice has {min_liver_area_mm2:g} mm2 of liver "
            f"(largest {float(profile.max(initial=0.0)):.0f} mm2)",
        )
    _check_coverage(profile, extent, n, cranial_last, edge_area_fraction, min_liver_slices, uid)

    index, target = level_in_extent(profile, extent, volume.slice_spacing, fraction, window_mm)
    rule = (
        f"largest liver area within {window_mm:g} mm of {fraction:g} of the liver's "
        f"cranio-caudal extent from its top (slice {extent.top} to slice {extent.bottom})"
    )
    logger.info(
        "series %s: caudate level at slice %d of %d (target %.1f, liver slices %d-%d, %.0f mm2)",
        uid,
        index,
        n,
        target,
        extent.first,
        extent.last,
        profile[index],
    )
    return CaudateSlice(
        index=index,
        sop_instance_uid=volume.sop_instance_uids[index],
        liver_area_mm2=float(profile[index]),
        profile_mm2=tuple(float(a) for a in profile),
        liver_first_index=extent.first,
        liver_last_index=extent.last,
        rule=rule,
    )


def level_in_extent(
    profile: npt.NDArray[np.float64],
    extent: LiverExtent,
    slice_spacing: float,
    fraction: float = DEFAULT_FRACTION,
    window_mm: float = WINDOW_MM,
) -> tuple[int, float]:
    """The rule itself: the slice of largest liver area within ``window_mm`` of ``fraction`` of
    the extent from its top. Returns the index and the target position (fractional index)."""
    target = extent.top + fraction * (extent.bottom - extent.top)
    half = math.floor(window_mm / slice_spacing + 1e-9) if window_mm > 0 else 0
    low = max(extent.first, round(target) - half)
    high = min(extent.last, round(target) + half)
    index = min(range(low, high + 1), key=lambda k: (-profile[k], abs(k - target)))
    return index, target


def caudate_index_of_mask(
    mask: npt.NDArray[np.bool_],
    pixel_spacing: tuple[float, float],
    slice_spacing: float,
    *,
    cranial_last: bool = True,
    fraction: float = DEFAULT_FRACTION,
    min_liver_area_mm2: float = MIN_LIVER_AREA_MM2,
) -> int:
    """The caudate-level index of a liver mask (slices, rows, columns) by the same rule as
    :func:`caudate_slice`, without coverage checks: for training data whose masks are true
    labels. ``cranial_last``: slices run from the feet to the head (NIfTI, phantoms)."""
    profile = mask.sum(axis=(1, 2), dtype=np.float64) * (pixel_spacing[0] * pixel_spacing[1])
    extent = liver_extent(profile, min_liver_area_mm2, cranial_last=cranial_last)
    if extent is None:
        raise ValueError("the liver mask is empty")
    return level_in_extent(profile, extent, slice_spacing, fraction)[0]


def liver_extent(
    profile: npt.NDArray[np.float64], min_area_mm2: float, *, cranial_last: bool
) -> LiverExtent | None:
    """The liver's run of slices in an area profile (see :func:`caudate_slice`), or None."""
    inside = profile >= min_area_mm2
    runs: list[tuple[int, int]] = []
    for k in np.flatnonzero(inside).tolist():
        if runs and k - runs[-1][1] <= MAX_BRIDGED_GAP + 1:
            runs[-1] = (runs[-1][0], k)
        else:
            runs.append((k, k))
    if not runs:
        return None
    first, last = max(runs, key=lambda run: float(profile[run[0] : run[1] + 1].sum()))
    return LiverExtent(top=last, bottom=first) if cranial_last else LiverExtent(first, last)


def _cranial_is_last(volume: Volume) -> bool:
    z = float(volume.normal[2])
    if abs(z) < AXIAL_MIN_NORMAL_Z:
        raise NotEvaluatedError(
            "unsupported_image",
            f"series {volume.series_instance_uid} is not axial (slice normal "
            f"{np.round(volume.normal, 2).tolist()}), so the caudate level cannot be located",
        )
    return z > 0


def _check_coverage(
    profile: npt.NDArray[np.float64],
    extent: LiverExtent,
    n: int,
    cranial_last: bool,
    edge_area_fraction: float,
    min_liver_slices: int,
    uid: str,
) -> None:
    if extent.slices < min_liver_slices:
        raise NotEvaluatedError(
            "liver_not_covered",
            f"series {uid} shows liver on {extent.slices} slice(s) only; at least "
            f"{min_liver_slices} are needed to locate the caudate level",
        )
    peak = float(profile[extent.first : extent.last + 1].max())
    top_edge, bottom_edge = (n - 1, 0) if cranial_last else (0, n - 1)
    for end, edge, where in ((extent.top, top_edge, "top"), (extent.bottom, bottom_edge, "bottom")):
        if end == edge and profile[end] >= edge_area_fraction * peak:
            raise NotEvaluatedError(
                "liver_not_covered",
                f"series {uid} does not cover the liver: it is cut at the {where} of the series "
                f"({profile[end]:.0f} mm2 of liver on the last slice there, "
                f"{100 * profile[end] / peak:.0f}% of its largest area), so the caudate level "
                "cannot be located",
            )
