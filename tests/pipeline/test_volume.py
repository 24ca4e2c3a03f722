"""Tests for pipeline.volume: sorting along the normal, geometry checks, compressed pixel data."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from pipeline.errors import NotEvaluatedError
from pipeline.results import Volume
from pipeline.volume import load_volume

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class SeriesStub:
    """The fields of pipeline.study_headers.SeriesHeaders that load_volume reads."""

    series_instance_uid: str
    headers: tuple[Dataset, ...]
    paths: tuple[Path, ...]


def slice_pixels(k: int, rows: int = 32, cols: int = 40) -> npt.NDArray[np.uint16]:
    """A pattern that differs per slice (value k*100 at [0, 0]) and per pixel."""
    grid = np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols)
    out = (grid * 7 + k * 100).astype(np.uint16)
    out[0, 0] = k * 100
    return out


def write_series(
    folder: Path,
    n: int = 10,
    *,
    step: float = -5.0,
    orientation: Sequence[float] = AXIAL,
    transfer_syntax: UID = ExplicitVRLittleEndian,
    edit: Callable[[int, Dataset], None] | None = None,
    shuffle: bool = True,
) -> SeriesStub:
    """Write n single-frame MR files; slice k is at origin + k*step along the normal.

    The default step is negative: files are written head to feet, as many scanners store them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    paths = []
    for k in range(n):
        pixels = slice_pixels(k)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SOPClassUID = MRImageStorage
        ds.PatientName = "Secret^Patient"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "MR"
        ds.InstanceNumber = k + 1
        ds.EchoTime = 90.0
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = list(np.array([-20.0, -30.0, 40.0]) + k * step * normal)
        ds.PixelSpacing = [1.5, 1.25]
        ds.SliceThickness = abs(step)
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.tobytes()
        if edit is not None:
            edit(k, ds)
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax)
        path = folder / f"{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    if shuffle:
        random.Random(n).shuffle(paths)
    headers = tuple(dcmread(p, stop_before_pixels=True) for p in paths)
    return SeriesStub(series_uid, headers, tuple(paths))


def instance_numbers(volume: object) -> list[int]:
    return [int(h.InstanceNumber) for h in volume.headers]  # type: ignore[attr-defined]


def test_sorted_ascending_along_normal_from_shuffled_head_to_feet_files(tmp_path: Path) -> None:
    series = write_series(tmp_path, 10, step=-5.0)
    volume = load_volume(series, min_slices=3)
    assert volume.shape == (10, 32, 40)
    # written head (k=0, z=40) to feet (k=9, z=-5): ascending z is k = 9 ... 0
    assert instance_numbers(volume) == list(range(10, 0, -1))
    np.testing.assert_allclose(volume.positions[:, 2], 40.0 - 5.0 * np.arange(9, -1, -1))
    assert np.all(np.diff(volume.positions @ volume.normal) > 0)
    for index, k in enumerate(range(9, -1, -1)):
        np.testing.assert_array_equal(volume.pixels[index], slice_pixels(k).astype(np.float32))
    assert volume.slice_spacing == pytest.approx(5.0)
    assert volume.pixel_spacing == (1.5, 1.25)
    assert volume.pixels.dtype == np.float32
    assert all("PixelData" not in h for h in volume.headers)
    assert volume.sop_instance_uids == tuple(str(h.SOPInstanceUID) for h in volume.headers)


def test_normal_pointing_to_the_feet_sorts_by_descending_z(tmp_path: Path) -> None:
    # row cosine along -x: the normal (row x column) is -z, so ascending along it goes to the feet
    series = write_series(tmp_path, 8, step=4.0, orientation=(-1, 0, 0, 0, 1, 0))
    volume = load_volume(series, min_slices=3)
    np.testing.assert_allclose(volume.normal, [0, 0, -1])
    assert np.all(np.diff(volume.positions[:, 2]) < 0)
    assert instance_numbers(volume) == list(range(1, 9))


def test_oblique_stack_is_accepted_and_sorted(tmp_path: Path) -> None:
    angle = np.deg2rad(20)
    orientation = (1, 0, 0, 0, np.cos(angle), np.sin(angle))
    series = write_series(tmp_path, 8, step=3.0, orientation=orientation)
    volume = load_volume(series, min_slices=3)
    assert instance_numbers(volume) == list(range(1, 9))
    assert volume.slice_spacing == pytest.approx(3.0)


def test_rescale_slope_and_intercept_are_applied(tmp_path: Path) -> None:
    def rescale(k: int, ds: Dataset) -> None:
        ds.RescaleSlope = 2.0 if k % 2 else 0.5
        ds.RescaleIntercept = -10.0

    volume = load_volume(write_series(tmp_path, 6, step=5.0, edit=rescale), min_slices=3)
    for index in range(6):
        slope = 2.0 if index % 2 else 0.5
        expected = slice_pixels(index).astype(np.float32) * slope - 10.0
        np.testing.assert_allclose(volume.pixels[index], expected)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_pixel_data_decodes_equal_to_uncompressed(tmp_path: Path, syntax: UID) -> None:
    plain = load_volume(write_series(tmp_path / "plain", 8), min_slices=3)
    packed_series = write_series(tmp_path / "packed", 8, transfer_syntax=syntax)
    assert all(h.file_meta.TransferSyntaxUID == syntax for h in packed_series.headers)
    packed = load_volume(packed_series, min_slices=3)
    np.testing.assert_array_equal(packed.pixels, plain.pixels)
    assert all("PixelData" not in h for h in packed.headers)


def test_headers_with_pixel_data_are_used_and_stripped_without_changing_them(
    tmp_path: Path,
) -> None:
    stub = write_series(tmp_path, 6)
    full = tuple(dcmread(p) for p in stub.paths)
    volume = load_volume(SeriesStub(stub.series_instance_uid, full, stub.paths), min_slices=3)
    assert all("PixelData" in ds for ds in full)
    assert all("PixelData" not in h for h in volume.headers)
    assert [str(h.SOPInstanceUID) for h in volume.headers] == [
        str(ds.SOPInstanceUID)
        for ds in sorted(full, key=lambda d: float(d.ImagePositionPatient[2]))
    ]
    np.testing.assert_array_equal(volume.pixels[0], slice_pixels(5).astype(np.float32))


def test_an_instance_listed_twice_is_read_once(tmp_path: Path) -> None:
    stub = write_series(tmp_path, 6)
    twice = SeriesStub(stub.series_instance_uid, stub.headers * 2, stub.paths * 2)
    assert load_volume(twice, min_slices=3).shape[0] == 6


def test_multi_echo_series_uses_the_longest_echo(tmp_path: Path) -> None:
    def echo(k: int, ds: Dataset) -> None:
        ds.EchoTime = 30.0 if k < 6 else 120.0
        position = np.array(ds.ImagePositionPatient, dtype=float)
        position[2] = 40.0 - 5.0 * (k % 6)
        ds.ImagePositionPatient = list(position)

    volume = load_volume(write_series(tmp_path, 12, edit=echo), min_slices=3)
    assert volume.shape[0] == 6
    assert {float(h.EchoTime) for h in volume.headers} == {120.0}
    assert instance_numbers(volume) == list(range(12, 6, -1))


def _edit_one(k0: int, change: Callable[[Dataset], None]) -> Callable[[int, Dataset], None]:
    def edit(k: int, ds: Dataset) -> None:
        if k == k0:
            change(ds)

    return edit


def _set(**values: object) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        for keyword, value in values.items():
            setattr(ds, keyword, value)

    return change


def _delete(keyword: str) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        delattr(ds, keyword)

    return change


def _move(dz: float) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + dz]

    return change


def _shift_in_plane(ds: Dataset) -> None:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x + 4.0, y, z]


def _resize(ds: Dataset) -> None:
    ds.Rows, ds.Columns = 40, 32  # same number of pixels, other shape


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_edit_one(3, _set(ImageOrientationPatient=[1, 0, 0, 0, 0.98, 0.199])), "oriented"),
        (_edit_one(3, _resize), "40x32 pixels"),
        (_edit_one(3, _set(PixelSpacing=[1.4, 1.25])), "pixel spacing"),
        (_edit_one(3, _set(FrameOfReferenceUID=generate_uid())), "frame of reference"),
        (lambda k, ds: delattr(ds, "FrameOfReferenceUID"), "FrameOfReferenceUID"),
        (_edit_one(3, _delete("ImagePositionPatient")), "ImagePositionPatient"),
        (_edit_one(2, _delete("ImageOrientationPatient")), "ImageOrientationPatient"),
        (_edit_one(4, _move(-5.0)), "share slice positions"),  # same place as slice 5
        (_edit_one(4, _move(2.0)), "uneven slice spacing"),
        (_edit_one(4, _shift_in_plane), "not stacked"),
    ],
)
def test_inconsistent_geometry_is_rejected_with_a_reason(
    tmp_path: Path, edit: Callable[[int, Dataset], None], words: str
) -> None:
    with pytest.raises(NotEvaluatedError) as info:
        load_volume(write_series(tmp_path, 8, edit=edit), min_slices=3)
    assert info.value.code == "inconsistent_geometry"
    assert words in info.value.message


def test_a_missing_slice_is_reported_as_a_gap(tmp_path: Path) -> None:
    stub = write_series(tmp_path, 9, shuffle=False)
    keep = [i for i in range(9) if i != 4]
    gapped = SeriesStub(
        stub.series_instance_uid,
        tuple(stub.headers[i] for i in keep),
        tuple(stub.paths[i] for i in keep),
    )
    with pytest.raises(NotEvaluatedError) as info:
        load_volume(gapped, min_slices=3)
    assert info.value.code == "inconsistent_geometry"
    assert "10.00 mm" in info.value.message
    assert "gap" in info.value.message


def test_too_few_slices(tmp_path: Path) -> None:
    with pytest.raises(NotEvaluatedError) as info:
        load_volume(write_series(tmp_path, 5))
    assert info.value.code == "too_few_slices"
    assert "5 images" in info.value.message


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_edit_one(2, _set(SOPClassUID="1.2.840.10008.5.1.4.1.1.4.1")), "multi-frame"),
        (_edit_one(2, _set(PhotometricInterpretation="MONOCHROME1")), "MONOCHROME1"),
        (_edit_one(2, _set(SamplesPerPixel=3)), "3 samples"),
    ],
)
def test_unsupported_images(
    tmp_path: Path, edit: Callable[[int, Dataset], None], words: str
) -> None:
    series = write_series(tmp_path, 6, edit=edit)
    with pytest.raises(NotEvaluatedError) as info:
        load_volume(series, min_slices=3)
    assert info.value.code == "unsupported_image"
    assert words in info.value.message


def test_multi_frame_image_is_rejected(tmp_path: Path) -> None:
    def two_frames(k: int, ds: Dataset) -> None:
        ds.NumberOfFrames = 2
        ds.PixelData = np.concatenate([slice_pixels(k), slice_pixels(k)]).tobytes()

    with pytest.raises(NotEvaluatedError) as info:
        load_volume(write_series(tmp_path, 6, edit=two_frames), min_slices=3)
    assert info.value.code == "unsupported_image"
    assert "multi-frame" in info.value.message


def test_one_enhanced_mr_file_is_unsupported_not_too_few_slices(tmp_path: Path) -> None:
    def enhanced(k: int, ds: Dataset) -> None:
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
        ds.NumberOfFrames = 1
        del ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing

    with pytest.raises(NotEvaluatedError) as info:
        load_volume(write_series(tmp_path, 1, edit=enhanced))
    assert info.value.code == "unsupported_image"


def test_undecodable_pixel_data_names_syntax_and_instance_not_patient(tmp_path: Path) -> None:
    stub = write_series(tmp_path, 6, transfer_syntax=JPEGLSLossless, shuffle=False)
    broken = dcmread(stub.paths[2])
    broken.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 62])  # a JPEG-LS stream cut short
    broken.save_as(stub.paths[2], enforce_file_format=True)
    with pytest.raises(NotEvaluatedError) as info:
        load_volume(stub, min_slices=3)
    assert info.value.code == "unreadable_pixel_data"
    assert str(broken.SOPInstanceUID) in info.value.message
    assert "JPEG-LS Lossless" in info.value.message
    assert "Secret" not in info.value.message


@pytest.fixture(scope="module")
def plain_phantom_volume(tmp_path_factory: pytest.TempPathFactory) -> npt.NDArray[np.float32]:
    return _phantom_ax_t2(tmp_path_factory.mktemp("plain"), ExplicitVRLittleEndian).pixels


def _phantom_ax_t2(folder: Path, syntax: str) -> Volume:
    from pipeline.phantoms import generate_study
    from pipeline.study_headers import scan_study

    phantom = generate_study(folder, cirrhotic=False, seed=3, roles=("ax_t2",), axial_t2_slices=10,
                             matrix=64, vendor="ge", transfer_syntax=syntax)  # fmt: skip
    (series,) = scan_study([phantom.path]).series
    assert {str(h.file_meta.TransferSyntaxUID) for h in series.headers} == {syntax}
    return load_volume(series)


@pytest.mark.parametrize(
    "syntax",
    [
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEGLSLossless,
        JPEG2000Lossless,
        JPEGLosslessSV1,
    ],
)
def test_phantom_series_in_every_written_syntax_loads_identically(
    tmp_path: Path, syntax: str, plain_phantom_volume: npt.NDArray[np.float32]
) -> None:
    volume = _phantom_ax_t2(tmp_path, syntax)
    np.testing.assert_array_equal(volume.pixels, plain_phantom_volume)


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
def test_phantom_series_of_each_vendor_equals_the_phantom_volume(
    tmp_path: Path, vendor: str
) -> None:
    from pipeline.phantoms import generate_study, phantom_axial_t2
    from pipeline.study_headers import scan_study

    phantom = generate_study(tmp_path, cirrhotic=True, seed=7, vendor=vendor,  # type: ignore[arg-type]
                             roles=("ax_t2",), axial_t2_slices=12, matrix=64)  # fmt: skip
    (series,) = scan_study([phantom.path]).series
    volume = load_volume(series)
    truth = phantom_axial_t2(cirrhotic=True, seed=7, vendor=vendor, slices=12, matrix=64)  # type: ignore[arg-type]
    # the phantom's own volume is sorted feet to head whatever order the vendor numbered in
    np.testing.assert_array_equal(volume.pixels, truth.image)
    assert np.all(np.diff(volume.positions[:, 2]) > 0)
    numbers = [int(h.InstanceNumber) for h in volume.headers]
    assert numbers in (sorted(numbers), sorted(numbers, reverse=True))
