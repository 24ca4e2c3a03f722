"""Small synthetic MR instances for tests of the agent edges (anatomy: pipeline.phantoms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def mr_dataset(
    *,
    study_uid: str,
    series_uid: str,
    sop_uid: str | None = None,
    index: int = 0,
    rows: int = 32,
    columns: int = 32,
    accession: str = "ACC0001",
) -> Dataset:
    """One axial MR slice with plausible headers and random pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "for"])
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = "TEST-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.AccessionNumber = accession
    ds.StudyDate = "20261126"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "MRI LIVER"
    ds.Modality = "MR"
    ds.SeriesNumber = 3
    ds.SeriesDescription = "t2_haste_tra"
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = 90
    ds.RepetitionTime = 1400
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-100, -100, -50 + 7.0 * index]
    ds.PixelSpacing = [1.5, 1.5]
    ds.SliceThickness = 6
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(index)
    ds.PixelData = rng.integers(0, 4000, (rows, columns), dtype=np.uint16).tobytes()
    return ds


def write_series(
    folder: Path,
    n: int,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    rows: int = 32,
    columns: int = 32,
) -> list[Path]:
    """Write ``n`` slices of one series; return the file paths."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    paths = []
    for i in range(n):
        ds = mr_dataset(
            study_uid=study_uid, series_uid=series_uid, index=i, rows=rows, columns=columns
        )
        path = folder / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
