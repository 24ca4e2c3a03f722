"""Load one series of single-frame MR images as a :class:`Volume` sorted along the slice normal.

Geometry follows PS3.3 C.7.6.2 (Image Plane Module): the slice normal is the cross product of the
row and column direction cosines of ImageOrientationPatient, and slices are ordered by the
projection of ImagePositionPatient on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from pipeline.errors import NotEvaluatedError
from pipeline.pixel_data import read_stored_values, without_pixel_data
from pipeline.results import Volume

logger = logging.getLogger(__name__)

MIN_SLICES = 8
"""Fewest slices a usable series has: a liver (13-17 cm cranio-caudal) at the thickest usual
axial spacing (10 mm) spans 13 slices or more; below 8 the series cannot cover it."""

ORIENTATION_TOLERANCE = 1e-3
"""Largest difference between direction cosines of two slices of one stack (about 0.06 degree)."""

PIXEL_SPACING_TOLERANCE = 1e-3
"""Largest relative difference between the PixelSpacing of two slices."""

DUPLICATE_TOLERANCE_MM = 0.01
"""Two slices closer than this along the normal are at the same position."""

STEP_TOLERANCE = 0.1
"""Largest deviation of one step between neighbours from the median step, as a fraction of it."""

MIN_STEP_TOLERANCE_MM = 0.05
"""...but never below this many mm (positions are often written with two decimals)."""

ENHANCED_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image Storage
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
    }
)


class SeriesFiles(Protocol):
    """What :func:`load_volume` needs of a series (``study_headers.SeriesHeaders`` has it)."""

    @property
    def series_instance_uid(self) -> str: ...

    @property
    def headers(self) -> Sequence[Dataset]: ...

    @property
    def paths(self) -> Sequence[Path]: ...


@dataclass(frozen=True)
class _Slice:
    header: Dataset
    path: Path
    position: npt.NDArray[np.float64]  # (3,)


def load_volume(series: SeriesFiles, *, min_slices: int = MIN_SLICES) -> Volume:
    """Read a series' pixel data into a volume sorted ascending along the slice normal.

    The geometry is checked from the headers first; only then is each file read once for its pixel
    data (compressed transfer syntaxes are decoded by pydicom's pixel data plugins: pylibjpeg,
    pyjpegls, pillow). RescaleSlope and RescaleIntercept are applied per slice.

    When several slices share a position and their EchoTime differs (a multi-echo series), the
    stack with the longest echo time (the most T2-weighted) is used and the others are dropped.
    Repeated copies of one SOP Instance UID are read once.

    Parameters
    ----------
    series
        Headers (read without pixel data) and the file of each instance, in any order.
    min_slices
        Fewest slices accepted.

    Returns
    -------
    Volume
        ``pixels[k]`` is the k-th slice along the normal (cross product of the row and column
        cosines); ``headers[k]`` its dataset without pixel data.

    Raises
    ------
    NotEvaluatedError
        ``unsupported_image`` (multi-frame, colour, MONOCHROME1, not an image),
        ``inconsistent_geometry`` (missing or mixed orientation, size, spacing, frame of reference;
        duplicate positions; gaps or uneven steps; slices not stacked along the normal),
        ``too_few_slices``, or ``unreadable_pixel_data`` (names the transfer syntax and the
        SOP Instance UID of the file that failed).
    """
    started = time.perf_counter()
    if len(series.headers) != len(series.paths):
        raise ValueError("series.headers and series.paths must have the same length")
    slices = _unique_slices(series)
    if len(slices) < min_slices:
        raise NotEvaluatedError(
            "too_few_slices",
            f"series {series.series_instance_uid} has {len(slices)} images; "
            f"at least {min_slices} axial slices are needed to cover the liver",
        )
    row_cosine, column_cosine, spacing, frame_of_reference = _common_geometry(slices)
    normal = np.cross(row_cosine, column_cosine)
    slices = _resolve_duplicate_positions(slices, normal)
    if len(slices) < min_slices:
        raise NotEvaluatedError(
            "too_few_slices",
            f"series {series.series_instance_uid} has {len(slices)} slice positions; "
            f"at least {min_slices} are needed to cover the liver",
        )
    distances = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(distances, kind="stable")
    slices = [slices[i] for i in order]
    distances = distances[order]
    positions = np.stack([s.position for s in slices])
    slice_spacing = _check_steps(distances, positions, normal, spacing)

    headers = tuple(s.header for s in slices)
    pixels = np.empty((len(slices), int(headers[0].Rows), int(headers[0].Columns)), np.float32)
    for k, item in enumerate(slices):
        pixels[k] = read_stored_values(item.path, item.header)
    volume = Volume(
        series_instance_uid=series.series_instance_uid,
        pixels=pixels,
        headers=tuple(without_pixel_data(h) for h in headers),
        positions=positions,
        row_cosine=row_cosine,
        column_cosine=column_cosine,
        pixel_spacing=spacing,
        slice_spacing=slice_spacing,
        frame_of_reference_uid=frame_of_reference,
    )
    logger.debug(
        "loaded series %s: %s slices of %sx%s, spacing %.3g mm, in %.3f s",
        series.series_instance_uid,
        *volume.shape,
        slice_spacing,
        time.perf_counter() - started,
    )
    return volume


def _unique_slices(series: SeriesFiles) -> list[_Slice]:
    seen: set[str] = set()
    slices: list[_Slice] = []
    for header, path in zip(series.headers, series.paths, strict=True):
        uid = str(header.get("SOPInstanceUID", ""))
        if uid and uid in seen:
            logger.debug("series %s: instance %s given twice", series.series_instance_uid, uid)
            continue
        seen.add(uid)
        _check_image(header)
        position = header.get("ImagePositionPatient")
        if position is None or len(position) != 3:
            raise NotEvaluatedError(
                "inconsistent_geometry",
                f"image {uid} has no ImagePositionPatient, so the slices cannot be ordered",
            )
        slices.append(_Slice(header, Path(path), np.asarray(position, dtype=np.float64)))
    return slices


def _check_image(ds: Dataset) -> None:
    uid = str(ds.get("SOPInstanceUID", ""))
    sop_class = str(ds.get("SOPClassUID", ""))
    frames = ds.get("NumberOfFrames")
    if sop_class in ENHANCED_SOP_CLASSES or (frames is not None and int(frames) > 1):
        raise NotEvaluatedError(
            "unsupported_image",
            f"image {uid} is a multi-frame (enhanced) MR image; send the series as classic "
            "single-frame MR images (an export option on most scanners)",
        )
    if "Rows" not in ds or "Columns" not in ds:
        raise NotEvaluatedError("unsupported_image", f"instance {uid} is not an image")
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if samples != 1 or photometric != "MONOCHROME2":
        raise NotEvaluatedError(
            "unsupported_image",
            f"image {uid} is {photometric} with {samples} samples per pixel; "
            "only greyscale MONOCHROME2 images can be evaluated",
        )
    for keyword in ("ImageOrientationPatient", "PixelSpacing"):
        if keyword not in ds:
            raise NotEvaluatedError(
                "inconsistent_geometry",
                f"image {uid} has no {keyword}, so its geometry is unknown",
            )


def _common_geometry(
    slices: list[_Slice],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], tuple[float, float], str]:
    first = slices[0].header
    orientation = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    spacing = np.asarray(first.PixelSpacing, dtype=np.float64)
    size = (int(first.Rows), int(first.Columns))
    frame_of_reference = str(first.get("FrameOfReferenceUID", ""))
    if orientation.shape != (6,) or spacing.shape != (2,) or np.any(spacing <= 0):
        raise NotEvaluatedError(
            "inconsistent_geometry",
            f"image {first.SOPInstanceUID} has a malformed ImageOrientationPatient or PixelSpacing",
        )
    if not frame_of_reference:
        raise NotEvaluatedError(
            "inconsistent_geometry",
            f"image {first.SOPInstanceUID} has no FrameOfReferenceUID",
        )
    for item in slices[1:]:
        ds = item.header
        uid = ds.SOPInstanceUID
        other = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        if other.shape != (6,) or np.max(np.abs(other - orientation)) > ORIENTATION_TOLERANCE:
            raise NotEvaluatedError(
                "inconsistent_geometry",
                f"image {uid} is oriented differently from image {first.SOPInstanceUID}; "
                "the series mixes several stacks",
            )
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise NotEvaluatedError(
                "inconsistent_geometry",
                f"image {uid} is {ds.Rows}x{ds.Columns} pixels where the series is "
                f"{size[0]}x{size[1]}",
            )
        other_spacing = np.asarray(ds.PixelSpacing, dtype=np.float64)
        if other_spacing.shape != (2,) or np.max(
            np.abs(other_spacing - spacing)
        ) > PIXEL_SPACING_TOLERANCE * float(np.max(spacing)):
            raise NotEvaluatedError(
                "inconsistent_geometry",
                f"image {uid} has pixel spacing {list(other_spacing)} mm where the series has "
                f"{list(spacing)} mm",
            )
        if str(ds.get("FrameOfReferenceUID", "")) != frame_of_reference:
            raise NotEvaluatedError(
                "inconsistent_geometry",
                f"image {uid} is in another frame of reference than image {first.SOPInstanceUID}",
            )
    row_cosine = orientation[:3] / np.linalg.norm(orientation[:3])
    column_cosine = orientation[3:] / np.linalg.norm(orientation[3:])
    if abs(float(row_cosine @ column_cosine)) > 1e-2:
        raise NotEvaluatedError(
            "inconsistent_geometry",
            f"image {first.SOPInstanceUID}: the row and column directions are not orthogonal",
        )
    return row_cosine, column_cosine, (float(spacing[0]), float(spacing[1])), frame_of_reference


def _resolve_duplicate_positions(
    slices: list[_Slice], normal: npt.NDArray[np.float64]
) -> list[_Slice]:
    distances = np.array([float(s.position @ normal) for s in slices])
    if not _has_duplicates(distances):
        return slices
    by_echo: dict[float, list[int]] = {}
    for index, item in enumerate(slices):
        echo = item.header.get("EchoTime")
        if echo is None:
            by_echo = {}
            break
        by_echo.setdefault(float(echo), []).append(index)
    if len(by_echo) > 1:
        longest = max(by_echo)
        chosen = by_echo[longest]
        if not _has_duplicates(distances[chosen]):
            logger.info(
                "multi-echo series: %d echo times, using the longest (%s ms, %d slices)",
                len(by_echo),
                longest,
                len(chosen),
            )
            return [slices[i] for i in chosen]
    order = np.argsort(distances, kind="stable")
    gaps = np.diff(distances[order])
    repeated = int(np.count_nonzero(gaps < DUPLICATE_TOLERANCE_MM))
    at = int(np.argmin(gaps))
    first, second = (slices[order[at]].header, slices[order[at + 1]].header)
    raise NotEvaluatedError(
        "inconsistent_geometry",
        f"{repeated + 1} or more images share slice positions (e.g. images "
        f"{first.get('SOPInstanceUID', '?')} and {second.get('SOPInstanceUID', '?')} at "
        f"{distances[order[at]]:.2f} mm along the slice normal); the series mixes several "
        "acquisitions, echoes or phases that cannot be told apart",
    )


def _has_duplicates(distances: npt.NDArray[np.float64]) -> bool:
    if distances.size < 2:
        return False
    return float(np.min(np.diff(np.sort(distances)))) < DUPLICATE_TOLERANCE_MM


def _check_steps(
    distances: npt.NDArray[np.float64],
    positions: npt.NDArray[np.float64],
    normal: npt.NDArray[np.float64],
    pixel_spacing: tuple[float, float],
) -> float:
    steps = np.diff(distances)
    step = float(np.median(steps))
    tolerance = max(STEP_TOLERANCE * step, MIN_STEP_TOLERANCE_MM)
    uneven = np.nonzero(np.abs(steps - step) > tolerance)[0]
    if uneven.size:
        k = int(uneven[0])
        kind = "a gap (missing slices?)" if steps[k] > step else "slices closer together"
        raise NotEvaluatedError(
            "inconsistent_geometry",
            f"uneven slice spacing: {steps[k]:.2f} mm between the slices at "
            f"{distances[k]:.2f} and {distances[k + 1]:.2f} mm along the normal where the "
            f"others are {step:.2f} mm apart ({kind}; {uneven.size} uneven step(s))",
        )
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.max(np.linalg.norm(in_plane, axis=1)))
    if drift > 0.5 * max(pixel_spacing):
        raise NotEvaluatedError(
            "inconsistent_geometry",
            f"the slices are not stacked along their normal (in-plane shift up to {drift:.2f} mm)",
        )
    return step
