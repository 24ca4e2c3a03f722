"""Synthetic axial T2 MR series and PipelineResults for the output tests and encode benchmark."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from pipeline.results import (
    CaudateSlice,
    Classification,
    EvaluatedResult,
    LiverSegmentation,
    ModelInfo,
    NotEvaluatedResult,
    SeriesCandidate,
    SeriesSelection,
    Volume,
)


def make_mr_series(
    n: int = 12,
    rows: int = 64,
    cols: int = 64,
    *,
    spacing: float = 1.5,
    thickness: float = 6.0,
    descending_positions: bool = False,
) -> list[Dataset]:
    """An axial T2 MR series (one dataset per slice, with pixel data) with a real geometry.

    Slices are returned sorted ascending along the slice normal; ``descending_positions``
    makes Instance Numbers run the other way (head to feet) as many scanners write them.
    """
    study_uid = generate_uid()
    series_uid = generate_uid()
    for_uid = generate_uid()
    out: list[Dataset] = []
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        sop_uid = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.PatientName = "Phantom^Liver"
        ds.PatientID = "PH-0001"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "F"
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = "20240102"
        ds.StudyTime = "101500"
        ds.AccessionNumber = "ACC123"
        ds.ReferringPhysicianName = "Referrer^Rita"
        ds.StudyID = "S1"
        ds.StudyDescription = "MRI LIVER"
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 5
        ds.SeriesDescription = "T2 SPIR TRA"
        ds.SeriesDate = "20240102"
        ds.SeriesTime = "101800"
        ds.BodyPartExamined = "ABDOMEN"
        ds.Manufacturer = "Phantom Medical"
        ds.ManufacturerModelName = "PM-1"
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.PatientPosition = "FFS"
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 1500.0
        ds.EchoTime = 80.0
        ds.EchoTrainLength = 16
        ds.MagneticFieldStrength = 1.5
        ds.InstanceNumber = n - k if descending_positions else k + 1
        ds.AcquisitionNumber = 1
        ds.ContentDate = "20240102"
        ds.ContentTime = "101900"
        z = -100.0 + k * thickness
        ds.ImagePositionPatient = [-cols * spacing / 2, -rows * spacing / 2, z]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceLocation = z
        ds.SliceThickness = thickness
        ds.SpacingBetweenSlices = thickness
        ds.PixelSpacing = [spacing, spacing]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        yy, xx = np.mgrid[0:rows, 0:cols]
        img = 200 + 800 * np.exp(-((yy - rows / 2) ** 2 + (xx - cols / 2) ** 2) / (rows * cols / 8))
        ds.PixelData = img.astype(np.uint16).tobytes()
        out.append(ds)
    return out


def ellipse_mask(
    n: int, rows: int, cols: int, *, first: int = 2, last: int | None = None
) -> np.ndarray:
    """A liver-like mask: an ellipse that grows then shrinks, absent outside [first, last]."""
    last = n - 3 if last is None else last
    mask = np.zeros((n, rows, cols), dtype=bool)
    yy, xx = np.mgrid[0:rows, 0:cols]
    mid = (first + last) / 2
    for k in range(first, last + 1):
        scale = 1.0 - abs(k - mid) / (mid - first + 2)
        ry, rx = rows * 0.25 * scale + 1, cols * 0.3 * scale + 1
        cy, cx = rows * 0.45, cols * 0.4
        mask[k] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return mask


def without_pixels(ds: Dataset) -> Dataset:
    """A copy of ``ds`` without Pixel Data (as pipeline.volume keeps headers)."""
    out = Dataset()
    out.file_meta = ds.file_meta
    for elem in ds:
        if elem.keyword != "PixelData":
            out.add(elem)
    return out


def model_info(task: str, *, demo: bool = False) -> ModelInfo:
    name = f"liver-{task}-demo" if demo else f"liver-{task}"
    return ModelInfo(
        name=name,
        version="1.2.0",
        task=task,
        architecture="unet-resnet34" if task == "segmentation" else "resnet50",
        demo=demo,
        sha256="0" * 64,
    )


def make_result(
    datasets: list[Dataset],
    *,
    present: bool = True,
    probability: float = 0.87,
    demo: bool = False,
    mode: str = "masked",
    mask: np.ndarray | None = None,
) -> EvaluatedResult:
    """A PipelineResult for a series built by :func:`make_mr_series` (sorted along the normal)."""
    first = datasets[0]
    n, rows, cols = len(datasets), int(first.Rows), int(first.Columns)
    headers = [without_pixels(ds) for ds in datasets]
    pixels = np.stack(
        [np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(rows, cols) for ds in datasets]
    ).astype(np.float32)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    spacing = tuple(float(v) for v in first.PixelSpacing)
    volume = Volume(
        series_instance_uid=str(first.SeriesInstanceUID),
        pixels=pixels,
        headers=tuple(headers),
        positions=positions,
        row_cosine=np.array([1.0, 0.0, 0.0]),
        column_cosine=np.array([0.0, 1.0, 0.0]),
        pixel_spacing=(spacing[0], spacing[1]),
        slice_spacing=float(first.SpacingBetweenSlices),
        frame_of_reference_uid=str(first.FrameOfReferenceUID),
    )
    mask = ellipse_mask(n, rows, cols) if mask is None else mask
    return result_for_volume(
        volume,
        mask,
        headers[0],
        present=present,
        probability=probability,
        demo=demo,
        mode=mode,
    )


def result_for_volume(
    volume: Volume,
    mask: np.ndarray,
    reference: Dataset,
    *,
    present: bool = True,
    probability: float = 0.87,
    demo: bool = False,
    mode: str = "masked",
    caudate_index: int | None = None,
) -> EvaluatedResult:
    """An evaluated PipelineResult of ``volume`` with ``mask`` as its liver segmentation.

    The caudate-level slice is ``caudate_index`` (default: the slice of largest liver area).
    """
    spacing = volume.pixel_spacing
    area = mask.sum(axis=(1, 2)) * spacing[0] * spacing[1]
    volume_ml = float(area.sum() * volume.slice_spacing / 1000.0)
    index = int(np.argmax(area)) if caudate_index is None else caudate_index
    segmentation = LiverSegmentation(
        mask=mask, area_mm2=area.astype(np.float64), volume_ml=volume_ml
    )
    nonzero = np.flatnonzero(area) if area.any() else np.array([index])
    caudate = CaudateSlice(
        index=index,
        sop_instance_uid=volume.sop_instance_uids[index],
        liver_area_mm2=float(area[index]),
        profile_mm2=tuple(float(a) for a in area),
        liver_first_index=int(nonzero[0]),
        liver_last_index=int(nonzero[-1]),
        rule="max-area",
    )
    description = str(volume.headers[0].get("SeriesDescription", ""))
    selection = SeriesSelection(
        series_instance_uid=volume.series_instance_uid,
        candidates=(
            SeriesCandidate(volume.series_instance_uid, description, 0.9, True, ("axial", "T2")),
        ),
    )
    return EvaluatedResult(
        study_instance_uid=str(reference.StudyInstanceUID),
        reference=reference,
        selection=selection,
        volume=volume,
        segmentation=segmentation,
        caudate=caudate,
        classification=Classification(
            probability=probability, present=present, threshold=0.5, mode=mode
        ),
        segmentation_model=model_info("segmentation", demo=demo),
        classification_model=model_info("classification", demo=demo),
    )


def make_not_evaluated(datasets: list[Dataset], code: str, reason: str) -> NotEvaluatedResult:
    """A not-evaluated PipelineResult for the study of ``datasets``."""
    ref = without_pixels(datasets[0])
    return NotEvaluatedResult(
        study_instance_uid=str(ref.StudyInstanceUID),
        reference=ref,
        selection=SeriesSelection(series_instance_uid=None, candidates=()),
        reason_code=code,
        reason=reason,
        classification_model=model_info("classification"),
        segmentation_model=model_info("segmentation"),
    )
