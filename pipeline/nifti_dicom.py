"""Write a NIfTI volume (a CHAOS subject) as a DICOM MR series with exact geometry.

Geometry (PS3.3 C.7.6.2, Image Plane Module) comes from the NIfTI affine, which maps voxel
indices to RAS+ millimetres; DICOM patient coordinates are LPS+, so x and y change sign. The
volume is first reoriented (nibabel) so that its axes run to the patient's left, posterior and
superior, the order :func:`pipeline.training.data.read_nifti` and the agent's volume loader give
(``pixels[slice, row, column]``, slice 0 the most inferior). For that array, with ``A`` the
reoriented affine and ``F = diag(-1, -1, 1)``:

- ImageOrientationPatient = ``F A[:, 0] / |A[:, 0]|`` (along a row: next column) and
  ``F A[:, 1] / |A[:, 1]|`` (down a column: next row);
- ImagePositionPatient of slice ``k`` = ``F A (0, 0, k, 1)`` (centre of the first pixel);
- PixelSpacing = ``|A[:, 1]|, |A[:, 0]|`` (between rows, between columns), SliceThickness and
  SpacingBetweenSlices = ``|A[:, 2]|``.

The order of storage is a choice: ``feet_first`` gives InstanceNumber 1 to the most inferior
slice, ``head_first`` to the most superior; positions are the same either way, so a reader that
sorts along the slice normal gets the same volume. Intensities that are whole numbers in
0..65535 (CHAOS) are stored unchanged as 16-bit unsigned values; others are scaled into 16 bits
with RescaleSlope/RescaleIntercept, and :attr:`DicomSeries.pixels` returns what a reader gets.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


class SliceOrder(enum.StrEnum):
    """In which order the slices of the series are numbered (InstanceNumber 1 first)."""

    FEET_FIRST = "feet-first"  # InstanceNumber 1 = most inferior slice
    HEAD_FIRST = "head-first"  # InstanceNumber 1 = most superior slice


@dataclass(frozen=True)
class MRProtocol:
    """Acquisition attributes written into every image (defaults: a T2 SPIR as in CHAOS,
    acquired on a 1.5 T Philips scanner; values are typical, not the subjects' own)."""

    series_description: str = "T2SPIR AX"
    protocol_name: str = "T2SPIR AX"
    manufacturer: str = "Philips Medical Systems"
    model_name: str = "Intera Achieva"
    field_strength_t: float = 1.5
    repetition_time_ms: float = 1600.0
    echo_time_ms: float = 70.0
    echo_train_length: int = 16
    flip_angle_deg: float = 90.0
    scanning_sequence: tuple[str, ...] = ("SE",)
    sequence_variant: tuple[str, ...] = ("SK",)
    scan_options: tuple[str, ...] = ("FS",)
    body_part: str = "ABDOMEN"


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """A written series: its UIDs, files (InstanceNumber order) and the volume a reader gets."""

    study_instance_uid: str
    series_instance_uid: str
    paths: tuple[Path, ...]  # InstanceNumber order
    sop_instance_uids: tuple[str, ...]  # slice order (as ``pixels``), slice 0 most inferior
    pixels: npt.NDArray[np.float32]  # (slices, rows, columns), slice 0 most inferior
    positions: npt.NDArray[np.float64]  # (slices, 3) ImagePositionPatient, same order
    row_cosine: npt.NDArray[np.float64]
    column_cosine: npt.NDArray[np.float64]
    pixel_spacing: tuple[float, float]
    slice_spacing: float


def nifti_lps_volume(
    path: Path,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """A NIfTI volume as ``pixels[slice, row, column]`` (L, P, S axes) and the RAS affine of
    the reoriented voxel grid (indices in the order column, row, slice)."""
    import nibabel as nib

    nio: Any = nib.orientations
    img: Any = nib.load(str(path))
    if len(img.shape) < 3 or any(n != 1 for n in img.shape[3:]):
        raise PipelineError("data_layout", f"{path}: expected a 3D image, got {img.shape}")
    if len(img.shape) > 3:
        img = img.slicer[..., *([0] * (len(img.shape) - 3))]
    transform = nio.ornt_transform(
        nio.io_orientation(img.affine), nio.axcodes2ornt(("L", "P", "S"))
    )
    lps = img.as_reoriented(transform)
    data = np.asarray(lps.dataobj, dtype=np.float64)
    return data.transpose(2, 1, 0), np.asarray(lps.affine, dtype=np.float64)


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _stored_values(
    pixels: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.uint16], float, float]:
    """16-bit stored values and (slope, intercept) such that slope * stored + intercept
    reproduces ``pixels`` exactly when they are whole numbers in 0..65535."""
    low, high = float(pixels.min()), float(pixels.max())
    if np.all(np.mod(pixels, 1.0) == 0) and low >= 0 and high <= 65535:
        return pixels.astype(np.uint16), 1.0, 0.0
    slope = (high - low) / 65535.0 if high > low else 1.0
    stored = np.clip(np.rint((pixels - low) / slope), 0, 65535).astype(np.uint16)
    # DS holds at most 16 characters: use the slope and intercept as they will be read back
    return stored, float(_ds(slope)), float(_ds(low))


def write_nifti_as_dicom(
    image: Path,
    out: Path,
    *,
    order: SliceOrder = SliceOrder.FEET_FIRST,
    subject: str = "1",
    protocol: MRProtocol = MRProtocol(),
    uid_seed: str | None = None,
) -> DicomSeries:
    """Write the NIfTI ``image`` as one MR Image Storage series, one Part 10 file per slice.

    Parameters
    ----------
    image
        A 3D NIfTI file (e.g. ``image_3.nii.gz`` of CHAOS).
    out
        Folder for the files (``IM0001.dcm`` ... in InstanceNumber order); created if missing.
    order
        Which end of the stack gets InstanceNumber 1.
    subject
        Written as PatientID ``CHAOS-<subject>`` and PatientName ``CHAOS^<subject>``.
    protocol
        Acquisition attributes.
    uid_seed
        Derive the UIDs from this text (the same seed gives the same UIDs); random otherwise.

    Returns
    -------
    DicomSeries
        The UIDs, the files and the volume as a reader sorting along the normal gets it.
    """
    pixels, affine = nifti_lps_volume(image)
    n_slices, rows, columns = pixels.shape
    axes = LPS_FROM_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)  # along columns, rows, slices
    row_cosine = axes[:, 0] / spacing[0]
    column_cosine = axes[:, 1] / spacing[1]
    if abs(float(row_cosine @ column_cosine)) > 1e-4:
        raise PipelineError(
            "data_layout", f"{image}: the affine's in-plane axes are not orthogonal (sheared)"
        )
    origin = LPS_FROM_RAS @ affine[:3, 3]
    positions = np.array([origin + k * axes[:, 2] for k in range(n_slices)])
    stored, slope, intercept = _stored_values(pixels)

    def new_uid(*parts: object) -> str:
        if uid_seed is None:
            return str(generate_uid())
        return str(generate_uid(entropy_srcs=["liver-agent-nifti/1", uid_seed, *map(str, parts)]))

    study_uid, series_uid, frame_uid = new_uid("study"), new_uid("series"), new_uid("for")
    now = datetime.now(UTC)
    base = _series_dataset(protocol, subject, now)
    base.StudyInstanceUID = study_uid
    base.SeriesInstanceUID = series_uid
    base.FrameOfReferenceUID = frame_uid
    base.Rows, base.Columns = rows, columns
    base.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
    base.SliceThickness = _ds(spacing[2])
    base.SpacingBetweenSlices = _ds(spacing[2])
    base.ImageOrientationPatient = [_ds(v) for v in (*row_cosine, *column_cosine)]
    base.ImagesInAcquisition = str(n_slices)
    if slope != 1.0 or intercept != 0.0:
        base.RescaleSlope, base.RescaleIntercept = _ds(slope), _ds(intercept)
        base.RescaleType = "US"
    centre = float(np.percentile(pixels, 50))
    base.WindowCenter = _ds(round(centre))
    base.WindowWidth = _ds(max(1.0, round(float(np.percentile(pixels, 99.5)))))

    out.mkdir(parents=True, exist_ok=True)
    normal = np.cross(row_cosine, column_cosine)
    numbering = range(n_slices) if order is SliceOrder.FEET_FIRST else range(n_slices - 1, -1, -1)
    paths = []
    sop_uids = [new_uid("instance", k) for k in range(n_slices)]
    for number, k in enumerate(numbering, start=1):
        ds = Dataset()
        ds.update(base)
        sop_uid = sop_uids[k]
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = str(number)
        ds.ImagePositionPatient = [_ds(v) for v in positions[k]]
        ds.SliceLocation = _ds(float(positions[k] @ normal))
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = out / f"IM{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    logger.info(
        "wrote %s as series %s: %d slices, %s", image.name, series_uid, n_slices, order.value
    )
    read_back = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return DicomSeries(
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        paths=tuple(paths),
        sop_instance_uids=tuple(sop_uids),
        pixels=read_back,
        positions=positions,
        row_cosine=row_cosine,
        column_cosine=column_cosine,
        pixel_spacing=(float(spacing[1]), float(spacing[0])),
        slice_spacing=float(spacing[2]),
    )


def _series_dataset(protocol: MRProtocol, subject: str, now: datetime) -> Dataset:
    """Patient, study, series, equipment and MR image attributes shared by every slice."""
    day, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = day
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = protocol.manufacturer
    ds.ManufacturerModelName = protocol.model_name
    ds.InstitutionName = "CHAOS (converted from NIfTI)"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CHAOS MR abdomen"
    ds.SeriesDescription = protocol.series_description
    ds.PatientName = f"CHAOS^{subject}"
    ds.PatientID = f"CHAOS-{subject}"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.BodyPartExamined = protocol.body_part
    ds.ScanningSequence = list(protocol.scanning_sequence)
    ds.SequenceVariant = list(protocol.sequence_variant)
    ds.ScanOptions = list(protocol.scan_options)
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = _ds(protocol.repetition_time_ms)
    ds.EchoTime = _ds(protocol.echo_time_ms)
    ds.EchoTrainLength = str(protocol.echo_train_length)
    ds.EchoNumbers = "1"
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = _ds(round(42.577478 * protocol.field_strength_t, 6))
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = _ds(protocol.field_strength_t)
    ds.FlipAngle = _ds(protocol.flip_angle_deg)
    ds.ProtocolName = protocol.protocol_name
    ds.PatientPosition = "HFS"
    ds.StudyID = "1"
    ds.SeriesNumber = "501"
    ds.AcquisitionNumber = "1"
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds
