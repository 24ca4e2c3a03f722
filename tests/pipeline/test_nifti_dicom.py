"""pipeline.nifti_dicom: a NIfTI volume written as a DICOM MR series lands on the same voxels
(geometry from the affine, RAS -> LPS), whichever end of the stack is numbered first."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom import dcmread

from pipeline.nifti_dicom import LPS_FROM_RAS, SliceOrder, write_nifti_as_dicom
from pipeline.selection import select_t2_series
from pipeline.study_headers import scan_study
from pipeline.training.data import read_nifti
from pipeline.volume import load_volume
from tests.chaos import CHAOS, requires_chaos
from tests.pipeline.outputs.validation import assert_valid


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _oblique() -> np.ndarray:
    angle = np.deg2rad(12.0)
    tilt = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    axes = tilt @ np.array([[0, 1.0, 0], [0, 0, -2.0], [3.0, 0, 0]])
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = axes, (-20.0, 10.0, -60.0)
    return affine


def _dicom_world(
    volume_positions: np.ndarray,
    row: np.ndarray,
    col: np.ndarray,
    spacing: tuple[float, float],
    k: int,
    r: int,
    c: int,
) -> np.ndarray:
    """LPS position of pixel (row r, column c) of slice k (PS3.3 C.7.6.2.1.1)."""
    return volume_positions[k] + c * spacing[1] * row + r * spacing[0] * col


@pytest.mark.parametrize("order", list(SliceOrder))
@pytest.mark.parametrize(
    "affine",
    [
        # LAS, like CHAOS
        np.array([[-1.25, 0, 0, 190.0], [0, 1.25, 0, -200.0], [0, 0, 7.7, -77.0], [0, 0, 0, 1]]),
        # RPI with anisotropic pixels: every axis flipped against LPS
        np.array([[0.9, 0, 0, -100.0], [0, -1.1, 0, 50.0], [0, 0, -5.0, 30.0], [0, 0, 0, 1]]),
        # axes permuted (voxel axis 0 runs superior), tilted 12 degrees about x
        _oblique(),
    ],
    ids=["LAS", "RPI", "permuted-oblique"],
)
def test_every_voxel_lands_where_the_affine_puts_it(
    tmp_path: Path, affine: np.ndarray, order: SliceOrder
) -> None:
    shape = (7, 6, 9)
    data = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)  # value = voxel id
    image = _write_nifti(tmp_path / "image_9.nii.gz", data, affine)
    written = write_nifti_as_dicom(image, tmp_path / "dicom", order=order, uid_seed="t")
    study = scan_study([tmp_path / "dicom"])
    volume = load_volume(study.series_by_uid(written.series_instance_uid), min_slices=3)
    # the same array as the NIfTI reader of the training code (integers are stored exactly)
    expected, spacing, slice_spacing = read_nifti(image)
    assert np.array_equal(volume.pixels, expected.astype(np.float32))
    assert volume.pixel_spacing == pytest.approx(spacing)
    assert volume.slice_spacing == pytest.approx(slice_spacing, rel=1e-6)
    # every pixel's DICOM patient position is its NIfTI voxel's position (RAS -> LPS)
    for k, r, c in np.ndindex(volume.shape):
        voxel = np.unravel_index(int(volume.pixels[k, r, c]), shape)
        world = LPS_FROM_RAS @ (affine @ np.array([*voxel, 1.0]))[:3]
        dicom = _dicom_world(
            volume.positions, volume.row_cosine, volume.column_cosine, volume.pixel_spacing, k, r, c
        )
        np.testing.assert_allclose(dicom, world, atol=1e-3)
    # InstanceNumber 1 is the most inferior slice feet-first, the most superior head-first
    first = dcmread(written.paths[0], stop_before_pixels=True)
    last = dcmread(written.paths[-1], stop_before_pixels=True)
    assert int(first.InstanceNumber) == 1
    assert int(last.InstanceNumber) == len(written.paths)
    z_first, z_last = float(first.ImagePositionPatient[2]), float(last.ImagePositionPatient[2])
    superior = np.sign(np.dot(volume.normal, [0, 0, 1]))
    if order is SliceOrder.FEET_FIRST:
        assert (z_first - z_last) * superior < 0
    else:
        assert (z_first - z_last) * superior > 0


def test_non_integer_intensities_are_rescaled_and_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(0.0, 3.0, (8, 8, 5))
    affine = np.diag([-1.0, 1.0, 4.0, 1.0])
    image = _write_nifti(tmp_path / "image_1.nii.gz", data, affine)
    written = write_nifti_as_dicom(image, tmp_path / "dicom")
    volume = load_volume(
        scan_study([tmp_path / "dicom"]).series_by_uid(written.series_instance_uid), min_slices=3
    )
    expected = read_nifti(image)[0]
    assert np.array_equal(volume.pixels, written.pixels)
    span = float(data.max() - data.min())
    assert np.abs(volume.pixels - expected).max() <= span / 65535.0
    assert "RescaleSlope" in dcmread(written.paths[0], stop_before_pixels=True)


@requires_chaos
@pytest.mark.parametrize("order", list(SliceOrder))
def test_a_chaos_subject_becomes_a_t2_series_the_agent_chooses(
    tmp_path: Path, order: SliceOrder
) -> None:
    image = CHAOS / "image_3.nii.gz"
    written = write_nifti_as_dicom(image, tmp_path / "3", order=order, subject="3")
    study = scan_study([tmp_path / "3"])
    selection = select_t2_series(study)
    assert selection.series_instance_uid == written.series_instance_uid
    volume = load_volume(study.series_by_uid(written.series_instance_uid))
    expected, spacing, slice_spacing = read_nifti(image)
    assert np.array_equal(volume.pixels, expected.astype(np.float32))  # CHAOS: whole numbers
    assert volume.pixel_spacing == pytest.approx(spacing)
    assert volume.slice_spacing == pytest.approx(slice_spacing, rel=1e-6)
    assert np.allclose(volume.row_cosine, [1, 0, 0])
    assert np.allclose(volume.column_cosine, [0, 1, 0])
    header = dcmread(written.paths[0], stop_before_pixels=True)
    assert header.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert float(header.EchoTime) >= 60
    assert float(header.MagneticFieldStrength) == 1.5
    assert "SPIR" in header.SeriesDescription
    assert_valid(written.paths[0])


def test_a_sheared_affine_is_refused(tmp_path: Path) -> None:
    from pipeline.errors import PipelineError

    affine = np.array([[-1.0, 0.2, 0, 0], [0, 1.0, 0, 0], [0, 0, 4.0, 0], [0, 0, 0, 1]])
    image = _write_nifti(tmp_path / "image_1.nii.gz", np.zeros((4, 4, 3)), affine)
    with pytest.raises(PipelineError, match="not orthogonal"):
        write_nifti_as_dicom(image, tmp_path / "dicom")
