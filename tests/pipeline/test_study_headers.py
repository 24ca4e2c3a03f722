"""Scanning a study folder: headers grouped by series, unusable files skipped with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from test_selection_headers import CORONAL, write_series

from pipeline.errors import NotEvaluatedError, PipelineError
from pipeline.study_headers import scan_study


def test_series_are_grouped_and_sorted(tmp_path: Path) -> None:
    s = generate_uid()
    b = write_series(tmp_path, s, 12, "b", n=3)
    a = write_series(tmp_path, s, 2, "a", n=4, iop=CORONAL)
    study = scan_study([tmp_path])
    assert study.study_instance_uid == s
    assert [x.series_instance_uid for x in study.series] == [a.uid, b.uid]
    assert [x.series_number for x in study.series] == [2, 12]
    first = study.series[0]
    assert [int(h.InstanceNumber) for h in first.headers] == [1, 2, 3, 4]
    assert first.paths == tuple(sorted(a.paths))
    assert all("PixelData" not in h for h in first.headers)
    assert study.skipped == ()
    assert study.reference().StudyInstanceUID == s
    assert study.series_by_uid(b.uid).description == "b"
    with pytest.raises(KeyError):
        study.series_by_uid("1.2.3")


def test_non_dicom_dicomdir_and_incomplete_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    written = write_series(tmp_path / "study", generate_uid(), 1, "t2", n=3)
    (tmp_path / "study" / "notes.txt").write_text("not an image")
    (tmp_path / "study" / ".DS_Store").write_bytes(b"\x00\x01")
    dicomdir = Dataset()
    dicomdir.file_meta = FileMetaDataset()
    dicomdir.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    dicomdir.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dicomdir.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dicomdir.FileSetID = "TEST"
    dicomdir.save_as(tmp_path / "study" / "DICOMDIR", enforce_file_format=True)
    no_series = dcmread(written.paths[0])
    del no_series.SeriesInstanceUID
    no_series.SOPInstanceUID = generate_uid()
    no_series.save_as(tmp_path / "study" / "no_series.dcm")

    study = scan_study([tmp_path / "study"])
    assert len(study.series) == 1
    assert len(study.series[0].headers) == 3
    reasons = {p.name: why for p, why in study.skipped}
    assert reasons["notes.txt"] == "not a DICOM file (no DICM prefix)"
    assert reasons[".DS_Store"] == "not a DICOM file (no DICM prefix)"
    assert reasons["DICOMDIR"].startswith("DICOMDIR")
    assert reasons["no_series.dcm"] == "no SeriesInstanceUID"


def test_files_and_folders_mixed_and_repeated_are_read_once(tmp_path: Path) -> None:
    written = write_series(tmp_path, generate_uid(), 1, "t2", n=3)
    copy = tmp_path / "copy.dcm"
    copy.write_bytes(written.paths[0].read_bytes())
    study = scan_study([written.paths[0], tmp_path, written.paths[1]])
    assert len(study.series[0].headers) == 3
    assert study.skipped == ((copy, f"duplicate SOPInstanceUID {dcmread(copy).SOPInstanceUID}"),)


def test_several_studies_are_refused(tmp_path: Path) -> None:
    write_series(tmp_path, generate_uid(), 1, "one", n=2)
    write_series(tmp_path, generate_uid(), 2, "two", n=2)
    with pytest.raises(PipelineError) as info:
        scan_study([tmp_path])
    assert info.value.code == "multiple_studies"
    assert "2 studies" in info.value.message


def test_no_dicom_is_not_evaluated(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(NotEvaluatedError) as info:
        scan_study([tmp_path])
    assert info.value.code == "no_dicom"
    assert "readme.txt: not a DICOM file" in info.value.message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotEvaluatedError, match="no usable DICOM file among 0 file"):
        scan_study([empty])


def test_reference_prefers_an_mr_image(tmp_path: Path) -> None:
    s = generate_uid()
    write_series(tmp_path, s, 1, "overlay", n=1, modality="OT")
    mr = write_series(tmp_path, s, 2, "t2", n=2)
    assert scan_study([tmp_path]).reference().SeriesInstanceUID == mr.uid


def test_scanning_reads_headers_only_not_pixel_data(tmp_path: Path) -> None:
    """Scanning a study reads each file's header and stops before the pixel data (its speed is
    measured by bench/pipeline_speed.py, not asserted here): files whose pixel data is cut off
    still scan, and no header holds pixel data."""
    s = generate_uid()
    vendor_header = {"ImageComments": "x" * 8000}  # stands in for a vendor's bulky private header
    for number in range(10):
        write_series(tmp_path, s, number + 1, f"series {number}", n=30, extra=vendor_header)
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 64])  # half the 8 x 8 pixel data is cut off
        with pytest.raises((EOFError, ValueError, OSError)):
            dcmread(path).pixel_array  # noqa: B018 - a full read fails on these files
    study = scan_study([tmp_path])
    assert sum(len(x.headers) for x in study.series) == 300
    assert all("PixelData" not in header for x in study.series for header in x.headers)
