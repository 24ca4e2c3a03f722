"""Tests for pipeline.pixel_data: the native fast path agrees with pydicom's decoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

import pipeline.pixel_data as pixel_data
from pipeline.errors import NotEvaluatedError
from pipeline.pixel_data import read_stored_values, without_pixel_data


def write(
    path: Path,
    values: np.ndarray,
    *,
    bits_stored: int,
    signed: bool,
    syntax: UID = ExplicitVRLittleEndian,
    trailing_padding: bool = False,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = values.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.RescaleSlope, ds.RescaleIntercept = 2.0, -3.0
    ds.PixelData = values.tobytes()
    if trailing_padding:
        ds.add_new(0xFFFCFFFC, "OB", b"\0" * 8)  # Data Set Trailing Padding after the pixels
    ds.save_as(path, enforce_file_format=True)
    return dcmread(path, stop_before_pixels=True)


CASES = [
    (np.array([[0x0FFF, 0x1FFF], [0xF800, 0x0800], [1, 2]], "<u2"), 12, False),
    (np.array([[0x0FFF, 0x1FFF], [0xF800, 0x0800], [1, 2]], "<u2").view("<i2"), 12, True),
    (np.array([[-5, 300], [32000, -32000], [0, 7]], "<i2"), 16, True),
    (np.array([[0, 255, 17], [3, 128, 9]], "u1"), 8, False),
    (np.array([[0, 255, 17], [3, 128, 9]], "u1"), 6, False),
]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize(("values", "bits_stored", "signed"), CASES)
def test_fast_path_equals_pydicom(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    values: np.ndarray,
    bits_stored: int,
    signed: bool,
    syntax: UID,
) -> None:
    path = tmp_path / "x.dcm"
    header = write(path, values, bits_stored=bits_stored, signed=signed, syntax=syntax)
    expected = pixel_array(path).astype(np.float32) * 2.0 - 3.0

    def no_decoder(*args: object, **kwargs: object) -> None:
        raise AssertionError("the native fast path should have read this file")

    monkeypatch.setattr(pixel_data, "pixel_array", no_decoder)
    np.testing.assert_array_equal(read_stored_values(path, header), expected)


def test_pixel_data_not_last_falls_back_to_pydicom(tmp_path: Path) -> None:
    values = np.arange(12, dtype="<u2").reshape(3, 4)
    path = tmp_path / "x.dcm"
    header = write(path, values, bits_stored=16, signed=False, trailing_padding=True)
    np.testing.assert_array_equal(read_stored_values(path, header), values * 2.0 - 3.0)


def test_compressed_goes_to_the_decoder_and_header_pixels_are_used(tmp_path: Path) -> None:
    values = np.arange(64, dtype="<u2").reshape(8, 8)
    path = tmp_path / "x.dcm"
    write(path, values, bits_stored=16, signed=False)
    full = dcmread(path)
    full.compress(RLELossless)
    full.save_as(path)
    header = dcmread(path, stop_before_pixels=True)
    np.testing.assert_array_equal(read_stored_values(path, header), values * 2.0 - 3.0)
    with_pixels = dcmread(path)
    path.unlink()  # the dataset's own pixel data is used, not the file
    np.testing.assert_array_equal(read_stored_values(path, with_pixels), values * 2.0 - 3.0)
    stripped = without_pixel_data(with_pixels)
    assert "PixelData" not in stripped
    assert "PixelData" in with_pixels
    assert stripped.file_meta.TransferSyntaxUID == RLELossless


def test_truncated_native_file_is_unreadable(tmp_path: Path) -> None:
    values = np.arange(64, dtype="<u2").reshape(8, 8)
    path = tmp_path / "x.dcm"
    header = write(path, values, bits_stored=16, signed=False)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(NotEvaluatedError) as info:
        read_stored_values(path, header)
    assert info.value.code == "unreadable_pixel_data"
    assert "Explicit VR Little Endian" in info.value.message
    assert str(header.SOPInstanceUID) in info.value.message
