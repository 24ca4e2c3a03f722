"""Labelled training/evaluation data read from folders (NIfTI CHAOS style, or DICOM series).

Orientation: every image is turned into DICOM axial display order, the order the agent's
volume loader gives: ``pixels[slice, row, column]`` with columns running to the patient's left,
rows to the posterior, slices from inferior to superior (LPS, like an axial DICOM series with
ImageOrientationPatient 1\\0\\0\\0\\1\\0 sorted along its normal). A NIfTI file is reoriented
from its affine: its voxel axis pointing left becomes the columns, posterior the rows,
superior the slices. For CHAOS (``LAS``) that is ``pixels[k, r, c] = data[c, J-1-r, k]``.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import PipelineError
from pipeline.input_distribution import AcquisitionValues, distribution_of

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

_NIFTI = re.compile(r"^(image|label|mask)_(.+?)\.nii(\.gz)?$")
_LABELS = {"cirrhosis": 1, "cirrhotic": 1, "1": 1, "normal": 0, "0": 0}


class DataError(PipelineError):
    """A training or evaluation data folder is not in a layout this package reads."""


@dataclass(frozen=True, eq=False)
class SegCase:
    """One labelled series: pixels and liver mask in DICOM axial order (see module doc)."""

    case_id: str
    pixels: FloatArray  # (slices, rows, columns)
    mask: BoolArray  # (slices, rows, columns), True = liver
    pixel_spacing: tuple[float, float]  # (between rows, between columns), mm
    slice_spacing: float
    acquisition: AcquisitionValues | None = None  # header values, for the training distribution


@dataclass(frozen=True, eq=False)
class ClsCase:
    """One labelled caudate-level slice with its liver mask; label 1 = cirrhosis."""

    case_id: str
    image: FloatArray  # (rows, columns)
    mask: BoolArray  # (rows, columns)
    label: int
    acquisition: AcquisitionValues | None = None  # header values, for the training distribution


def natural_key(text: str) -> tuple[object, ...]:
    """Sort key that puts ``2`` before ``10``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def read_nifti(path: Path) -> tuple[npt.NDArray[np.float64], tuple[float, float], float]:
    """Read a NIfTI volume in DICOM axial order (slices, rows, columns) with its spacing.

    Returns
    -------
    tuple
        The array, (row spacing, column spacing) in mm, and the slice spacing in mm. A 2D
        image comes back with one slice.
    """
    import nibabel as nib

    nio: Any = nib.orientations
    img: Any = nib.load(str(path))
    data = np.asarray(img.dataobj)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
        zooms = (*zooms[:2], 1.0)
    if data.ndim != 3:
        raise DataError("data_layout", f"{path}: expected a 2D or 3D image, got {data.shape}")
    transform = nio.ornt_transform(
        nio.io_orientation(img.affine), nio.axcodes2ornt(("L", "P", "S"))
    )
    oriented = nio.apply_orientation(data, transform)
    spacing = [0.0, 0.0, 0.0]
    for src_axis, (dst_axis, _flip) in enumerate(transform):
        spacing[int(dst_axis)] = zooms[src_axis]
    # (L=columns, P=rows, S=slices) -> (slices, rows, columns)
    return oriented.transpose(2, 1, 0), (spacing[1], spacing[0]), spacing[2]


def read_dicom_series(folder: Path) -> tuple[FloatArray, tuple[float, float], float]:
    """Read the one DICOM series in ``folder``, sorted along the slice normal (inferior first
    for an axial series), rescaled to stored-value units."""
    stack, spacing, slice_spacing, _ = read_dicom_series_values(folder)
    return stack, spacing, slice_spacing


def read_dicom_series_values(
    folder: Path,
) -> tuple[FloatArray, tuple[float, float], float, AcquisitionValues]:
    """:func:`read_dicom_series` and the acquisition values of the series' first header."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    slices = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(file)
        except (InvalidDicomError, OSError):
            continue
        if "PixelData" in ds:
            slices.append(ds)
    if not slices:
        raise DataError("data_layout", f"{folder}: no DICOM images found")
    series = {str(ds.SeriesInstanceUID) for ds in slices}
    if len(series) > 1:
        raise DataError("data_layout", f"{folder}: holds {len(series)} series; put one per folder")
    orientation = np.array([float(v) for v in slices[0].ImageOrientationPatient])
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    order = np.argsort(positions @ normal)
    stack = np.stack(
        [
            slices[i].pixel_array.astype(np.float32) * float(getattr(slices[i], "RescaleSlope", 1))
            + float(getattr(slices[i], "RescaleIntercept", 0))
            for i in order
        ]
    )
    distances = np.sort(positions @ normal)
    gaps = np.diff(distances)
    slice_spacing = (
        float(np.median(gaps)) if gaps.size else float(getattr(slices[0], "SliceThickness", 1))
    )
    spacing = tuple(float(v) for v in slices[0].PixelSpacing)
    values = AcquisitionValues.from_dataset(slices[0])
    return stack, (spacing[0], spacing[1]), slice_spacing, values


def nifti_values(shape: tuple[int, ...], spacing: tuple[float, float]) -> AcquisitionValues:
    """What a NIfTI image says of its acquisition: pixel spacing and matrix only."""
    return AcquisitionValues(
        source="nifti", pixel_spacing_mm=spacing, rows=int(shape[-2]), columns=int(shape[-1])
    )


def training_distribution(cases: Sequence[SegCase | ClsCase]) -> dict[str, Any] | None:
    """The manifest's ``training_distribution`` of the training cases (None when no case
    carries acquisition values)."""
    found = distribution_of(c.acquisition for c in cases)
    return None if found is None else found.model_dump(mode="json")


def _nifti_files(folder: Path) -> dict[tuple[str, str], Path]:
    found: dict[tuple[str, str], Path] = {}
    for file in folder.iterdir():
        match = _NIFTI.match(file.name)
        if match and file.is_file():
            found[(match.group(1), match.group(2))] = file
    return found


def load_segmentation_cases(
    folder: Path, *, case_ids: Sequence[str] | None = None, liver_label: int = 1
) -> list[SegCase]:
    """Read a labelled segmentation folder.

    Layouts (both may be mixed): CHAOS-style NIfTI pairs ``image_<case>.nii.gz`` +
    ``label_<case>.nii.gz`` (liver = ``liver_label``, other labels ignored); or a DICOM series
    in a subfolder ``<case>/`` + ``label_<case>.npy``, a (slices, rows, columns) array in the
    series' order sorted along the slice normal (nonzero = liver, or ``liver_label``).

    Parameters
    ----------
    folder
        The data folder.
    case_ids
        Read only these cases (all found when None).
    liver_label
        Label value of the liver.
    """
    if not folder.is_dir():
        raise DataError("data_missing", f"data folder {folder} does not exist")
    files = _nifti_files(folder)
    ids = {cid for kind, cid in files if kind == "image"}
    ids |= {
        p.name
        for p in folder.iterdir()
        if p.is_dir() and (folder / f"label_{p.name}.npy").is_file()
    }
    if not ids:
        raise DataError(
            "data_layout",
            f"{folder}: no image_<case>.nii.gz / label_<case>.nii.gz pairs and no <case>/ DICOM "
            "folders with label_<case>.npy",
        )
    wanted = sorted(ids, key=natural_key) if case_ids is None else list(case_ids)
    missing = [c for c in wanted if c not in ids]
    if missing:
        raise DataError("data_missing", f"{folder}: cases not found: {', '.join(missing)}")
    return [_seg_case(folder, files, cid, liver_label) for cid in wanted]


def _seg_case(folder: Path, files: dict[tuple[str, str], Path], cid: str, liver: int) -> SegCase:
    if ("image", cid) in files:
        label_file = files.get(("label", cid)) or files.get(("mask", cid))
        if label_file is None:
            raise DataError("data_missing", f"{folder}: image_{cid} has no label_{cid}.nii.gz")
        pixels, spacing, slice_spacing = read_nifti(files[("image", cid)])
        labels, _, _ = read_nifti(label_file)
        values = nifti_values(pixels.shape, spacing)
    else:
        pixels_f, spacing, slice_spacing, values = read_dicom_series_values(folder / cid)
        pixels = pixels_f.astype(np.float64)
        labels = np.load(folder / f"label_{cid}.npy")
    if labels.shape != pixels.shape:
        raise DataError("data_layout", f"case {cid}: label {labels.shape} != image {pixels.shape}")
    mask = np.rint(labels) == liver
    return SegCase(cid, pixels.astype(np.float32), mask, spacing, slice_spacing, values)


def caudate_fallback_index(
    mask: BoolArray,
    fraction: float = 0.45,
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    slice_spacing: float = 5.0,
) -> int:
    """The caudate-level slice of a labelled volume (slices run inferior to superior) by the
    pipeline's rule, used when a classification case gives no slice index."""
    from pipeline.caudate import caudate_index_of_mask

    if not mask.any():
        raise DataError("data_layout", "the liver mask is empty")
    return caudate_index_of_mask(
        mask,
        pixel_spacing,
        slice_spacing,
        cranial_last=True,
        fraction=fraction,
        min_liver_area_mm2=1e-6,  # any liver pixel: true labels need no noise threshold
    )


def load_classification_cases(
    folder: Path, *, case_ids: Sequence[str] | None = None
) -> list[ClsCase]:
    """Read a labelled classification folder.

    ``labels.csv`` with columns ``case,label[,slice]`` (label ``cirrhosis``/``normal`` or
    ``1``/``0``). Per case either ``image_<case>.nii.gz`` + ``mask_<case>.nii.gz`` (or
    ``label_<case>.nii.gz``, liver = 1), a 2D slice or a 3D volume; or a DICOM series folder
    ``<case>/`` + ``mask_<case>.npy`` (slices, rows, columns) in the series' sorted order.
    For a volume, ``slice`` is the index along the NIfTI's third axis (or the sorted DICOM
    series); without it the slice at 45 % of the liver's extent from its top is used.
    """
    table = folder / "labels.csv"
    if not table.is_file():
        raise DataError("data_layout", f"{folder}: labels.csv (case,label[,slice]) is missing")
    with table.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"case", "label"} <= set(rows[0]):
        raise DataError("data_layout", f"{table}: needs a header with columns case,label[,slice]")
    files = _nifti_files(folder)
    wanted = None if case_ids is None else set(case_ids)
    cases = []
    for row in rows:
        cid = row["case"].strip()
        if wanted is not None and cid not in wanted:
            continue
        label = _LABELS.get(row["label"].strip().lower())
        if label is None:
            raise DataError(
                "data_layout",
                f"{table}: case {cid}: label {row['label']!r} is not cirrhosis/normal/1/0",
            )
        slice_text = (row.get("slice") or "").strip()
        cases.append(_cls_case(folder, files, cid, label, int(slice_text) if slice_text else None))
    if wanted is not None and wanted - {c.case_id for c in cases}:
        raise DataError(
            "data_missing",
            f"{table}: cases not listed: {', '.join(sorted(wanted - {c.case_id for c in cases}))}",
        )
    return cases


def _cls_case(
    folder: Path, files: dict[tuple[str, str], Path], cid: str, label: int, index: int | None
) -> ClsCase:
    if ("image", cid) in files:
        mask_file = files.get(("mask", cid)) or files.get(("label", cid))
        if mask_file is None:
            raise DataError("data_missing", f"{folder}: image_{cid} has no mask_{cid}.nii.gz")
        pixels, spacing, slice_spacing = read_nifti(files[("image", cid)])
        values = nifti_values(pixels.shape, spacing)
        raw_mask, _, _ = read_nifti(mask_file)
        mask = (raw_mask == 1) if mask_file.name.startswith("label_") else raw_mask != 0
        if index is not None:
            index = _stored_to_sorted_index(files[("image", cid)], index, pixels.shape[0])
    elif (folder / cid).is_dir() and (folder / f"mask_{cid}.npy").is_file():
        pixels_f, spacing, slice_spacing, values = read_dicom_series_values(folder / cid)
        pixels = pixels_f.astype(np.float64)
        mask = np.load(folder / f"mask_{cid}.npy") != 0
        mask = mask.reshape(pixels.shape) if mask.size == pixels.size else mask
    else:
        raise DataError(
            "data_missing",
            f"{folder}: case {cid} has neither image_{cid}.nii.gz nor {cid}/ + mask_{cid}.npy",
        )
    if mask.shape != pixels.shape:
        raise DataError("data_layout", f"case {cid}: mask {mask.shape} != image {pixels.shape}")
    if index is None:
        index = (
            0
            if pixels.shape[0] == 1
            else caudate_fallback_index(mask, pixel_spacing=spacing, slice_spacing=slice_spacing)
        )
    if not 0 <= index < pixels.shape[0]:
        raise DataError(
            "data_layout", f"case {cid}: slice {index} outside 0..{pixels.shape[0] - 1}"
        )
    image = pixels[index].astype(np.float32)
    return ClsCase(cid, image, mask[index].astype(bool), label, values)


def _stored_to_sorted_index(path: Path, index: int, n: int) -> int:
    """Map an index along a NIfTI's stored third axis to the inferior-to-superior order."""
    import nibabel as nib

    nio: Any = nib.orientations
    img: Any = nib.load(str(path))
    ornt = nio.io_orientation(img.affine)
    if int(ornt[2, 0]) != 2:
        raise DataError("data_layout", f"{path}: the third axis is not the axial slice axis")
    return index if ornt[2, 1] > 0 else n - 1 - index
