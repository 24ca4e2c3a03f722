"""Real anatomy through DICOM: a CHAOS subject written as an axial MR series (numbered feet-first,
and head-first) goes to ``liver-agent serve`` by DCMTK storescu; the SEG the agent sends to a
DCMTK storescp is decoded with highdicom and must hold, voxel for voxel, the mask the same
bundle predicts on the NIfTI voxels: same slices, same orientation, no flips, no off-by-one."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest
from pydicom import dcmread

from pipeline.bundle import load_bundle
from pipeline.inference import SegmentationModel
from pipeline.nifti_dicom import DicomSeries, SliceOrder, write_nifti_as_dicom
from pipeline.training.data import read_nifti
from tests.agent.test_delivery import StoreSCP
from tests.bundles import write_test_bundles
from tests.chaos import CHAOS, requires_chaos
from tests.integration.processes import free_port, running_agent, storescu

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_chaos]

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SUBJECT = "3"  # not among the tiny bundle's training subjects
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def _nifti_path_mask(
    model: SegmentationModel, image: Path, scratch: Path
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """The bundle's mask on the NIfTI path: as (slices, rows, columns) in read_nifti's order, and
    in the NIfTI file's own voxel order (i, j, k)."""
    mask = model.segment(read_nifti(image)[0])
    # which voxel of the file each (slice, row, column) is: read an image of voxel numbers with
    # the same affine the same way
    img = nib.load(str(image))
    shape = img.shape[:3]
    ids = nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.float64).reshape(shape), img.affine)
    nib.save(ids, str(scratch / "voxel-ids.nii.gz"))
    voxel_ids = read_nifti(scratch / "voxel-ids.nii.gz")[0].astype(np.int64)
    native = np.zeros(int(np.prod(shape)), dtype=bool)
    native[voxel_ids.ravel()] = mask.ravel()
    return mask, native.reshape(shape)


def _check_seg_geometry(
    seg: hd.seg.Segmentation, native: npt.NDArray[np.bool_], affine_ras: npt.NDArray[np.float64]
) -> None:
    """Every voxel of the SEG, placed by its own plane positions and orientation, falls on a
    NIfTI voxel centre and holds that voxel's predicted value."""
    volume = seg.get_volume(combine_segments=True)
    array = np.asarray(volume.array)
    assert array.ndim == 3
    index = np.stack(np.meshgrid(*[np.arange(n) for n in array.shape], indexing="ij"), -1)
    lps = index.reshape(-1, 3) @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    ras = lps @ LPS_FROM_RAS.T
    voxel = (ras - affine_ras[:3, 3]) @ np.linalg.inv(affine_ras[:3, :3]).T
    nearest = np.rint(voxel)
    assert np.abs(voxel - nearest).max() < 1e-3, "SEG voxels fall between NIfTI voxel centres"
    i, j, k = nearest.astype(np.int64).T
    inside = (i >= 0) & (i < native.shape[0]) & (j >= 0) & (j < native.shape[1])
    inside &= (k >= 0) & (k < native.shape[2])
    assert inside.all(), "the SEG reaches outside the scanned volume"
    assert np.array_equal(array.reshape(-1) > 0, native[i, j, k])
    assert int(inside.sum()) == native.size  # every NIfTI voxel, once


def test_seg_from_the_agent_lands_on_the_voxels_the_bundle_predicts(
    tmp_path: Path, chaos_segmentation_bundle: Path
) -> None:
    image = CHAOS / f"image_{SUBJECT}.nii.gz"
    model = SegmentationModel(load_bundle(chaos_segmentation_bundle), device="cpu")
    expected, native = _nifti_path_mask(model, image, tmp_path)
    assert expected.any(), "the bundle finds no liver: the test would prove nothing"
    assert not expected.all()
    series: dict[SliceOrder, DicomSeries] = {
        order: write_nifti_as_dicom(image, tmp_path / order.value, order=order, subject=SUBJECT)
        for order in SliceOrder
    }
    _, classifier = write_test_bundles(tmp_path / "bundles")
    dest_port = free_port()
    scp = StoreSCP(tmp_path / "received", dest_port)
    scp.start()
    destination = {
        "name": "viewer",
        "ae_title": "DEST",
        "host": "127.0.0.1",
        "port": dest_port,
        "route": "always",
        "send": {"seg": True, "sr": True, "sc": False},
    }
    bundles = {
        "segmentation": str(chaos_segmentation_bundle),
        "classification": str(classifier),
        "device": "cpu",
        # this test is about geometry: the agent runs the network as the test's own model does
        # (PyTorch float32), so any difference is a voxel placed wrongly; the default OpenVINO
        # runtime's numerics are checked in tests/pipeline/test_openvino_runtime.py
        "runtime": "torch",
    }
    try:
        with running_agent(tmp_path / "agent", model=bundles, destinations=[destination]) as agent:
            try:
                for written in series.values():
                    sent = storescu(agent.port, list(written.paths))  # InstanceNumber order
                    assert sent.returncode == 0, sent.stdout + sent.stderr
                jobs = {
                    order: agent.finished_job(written.study_instance_uid, deadline_s=300)
                    for order, written in series.items()
                }
            except BaseException:
                print("---- agent log (tail) ----\n" + agent.log()[-6000:])
                raise
    finally:
        scp.stop()
    segs = {}
    for path in scp.received():
        ds = dcmread(path)
        if ds.SOPClassUID == SEG:
            segs[str(ds.StudyInstanceUID)] = path
    affine_ras = nib.load(str(image)).affine
    for order, written in series.items():
        job = jobs[order]
        assert job["status"] == "done", job
        assert job["evaluated"] is True, job
        seg = hd.seg.segread(segs[written.study_instance_uid])
        # by reference: frame of each source image, in the series' slice order
        by_source = seg.get_pixels_by_source_instance(
            written.sop_instance_uids, segment_numbers=[1], combine_segments=True
        )
        assert by_source.shape == expected.shape
        assert np.array_equal(by_source > 0, expected), f"{order.value}: SEG differs"
        # by geometry: the SEG's own plane positions put each voxel on its NIfTI voxel
        _check_seg_geometry(seg, native, affine_ras)
