"""Tests for pipeline.phantoms: determinism, vendor headers, geometry, ground truth, anatomy."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from scipy import ndimage
from typer.testing import CliRunner

from agent.cli import app
from pipeline.phantoms import (
    ALL_ROLES,
    SUPPORTED_TRANSFER_SYNTAXES,
    VENDORS,
    PhantomStudy,
    Vendor,
    generate_study,
    phantom_axial_t2,
)
from pipeline.phantoms.acquisition import painted_for, plan, stream
from pipeline.phantoms.anatomy import body_model
from pipeline.phantoms.grid import AXIAL, make_grid
from pipeline.phantoms.jpeg_lossless import encode_sv1
from pipeline.phantoms.painter import paint
from pipeline.phantoms.tissues import Tissue
from tests.cli_output import unwrapped

SMALL = {"axial_t2_slices": 16, "matrix": 64}
DCIODVFY = Path("/usr/bin/dciodvfy")


def _read(paths: tuple[Path, ...], pixels: bool = True) -> list[Dataset]:
    return [dcmread(p, stop_before_pixels=not pixels) for p in paths]


def _normal(ds: Dataset) -> npt.NDArray[np.float64]:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(iop[:3], iop[3:])


def _along_normal(ds: Dataset) -> float:
    return float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), _normal(ds)))


def _sorted_volume(paths: tuple[Path, ...]) -> tuple[npt.NDArray[np.float64], list[Dataset]]:
    """Pixels sorted by ascending dot(position, normal), as a loader does."""
    headers = sorted(_read(paths), key=_along_normal)
    return np.stack([h.pixel_array.astype(float) for h in headers]), headers


@pytest.fixture(scope="module")
def full_studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PhantomStudy]:
    """The full exam for each vendor (small matrix), cirrhotic for GE, normal otherwise."""
    root = tmp_path_factory.mktemp("full")
    return {
        v: generate_study(root / v, cirrhotic=v == "ge", vendor=v, seed=7, **SMALL) for v in VENDORS
    }


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    roles = ("ax_t2", "dwi")
    a = generate_study(tmp_path / "a", cirrhotic=True, seed=3, roles=roles, **SMALL)
    b = generate_study(tmp_path / "b", cirrhotic=True, seed=3, roles=roles, **SMALL)
    c = generate_study(tmp_path / "c", cirrhotic=True, seed=4, roles=roles, **SMALL)
    assert a.study_instance_uid == b.study_instance_uid != c.study_instance_uid
    for sa, sb, sc in zip(a.series, b.series, c.series, strict=True):
        assert sa.series_instance_uid == sb.series_instance_uid != sc.series_instance_uid
        assert [f.read_bytes() for f in sa.files] == [f.read_bytes() for f in sb.files]
        pa = dcmread(sa.files[0]).PixelData
        assert pa != dcmread(sc.files[0]).PixelData
    assert a.liver_mask is not None
    assert b.liver_mask is not None
    assert c.liver_mask is not None
    assert np.array_equal(a.liver_mask, b.liver_mask)
    assert a.liver_mask.shape != c.liver_mask.shape or not np.array_equal(
        a.liver_mask, c.liver_mask
    )
    sops = {dcmread(f).SOPInstanceUID for s in a.series for f in s.files}
    assert len(sops) == sum(len(s.files) for s in a.series)  # unique per instance


def test_in_memory_volume_equals_written_target(full_studies: dict[str, PhantomStudy]) -> None:
    study = full_studies["philips"]
    vol = phantom_axial_t2(cirrhotic=False, seed=7, vendor="philips", slices=16, matrix=64)
    pixels, _ = _sorted_volume(study.series_by_role("ax_t2").files)
    assert vol.image.dtype == np.float32
    assert np.array_equal(vol.image, pixels)
    assert study.liver_mask is not None
    assert np.array_equal(vol.liver_mask, study.liver_mask)
    assert (vol.caudate_index, vol.liver_extent) == (study.caudate_index, study.liver_extent)


@pytest.mark.parametrize(
    ("vendor", "manufacturer", "names"),
    [
        ("siemens", "SIEMENS", {"ax_t2": "t2_haste_tra_mbh", "cor_t2": "t2_haste_cor_mbh"}),
        ("ge", "GE MEDICAL SYSTEMS", {"ax_t2": "Ax SSFSE T2", "adc": "Apparent Diffusion"}),
        ("philips", "Philips", {"ax_t2_fs": "T2W_SPAIR", "dyn_arterial": "eTHRIVE"}),
    ],
)
def test_vendor_naming(
    full_studies: dict[str, PhantomStudy], vendor: str, manufacturer: str, names: dict[str, str]
) -> None:
    study = full_studies[vendor]
    assert [s.role for s in study.series] == list(ALL_ROLES)
    for role, text in names.items():
        ds = dcmread(study.series_by_role(role).files[0])
        assert ds.Manufacturer.startswith(manufacturer)
        assert text in ds.SeriesDescription
        assert study.series_by_role(role).description == ds.SeriesDescription
    dwi = _read(study.series_by_role("dwi").files)
    assert sorted({float(d.DiffusionBValue) for d in dwi}) == [50.0, 400.0, 800.0]
    assert all(d.ScanningSequence == "EP" for d in dwi)
    assert all(40 < float(d.EchoTime) < 90 for d in dwi)
    adc = dcmread(study.series_by_role("adc").files[0])
    assert adc.ImageType[0] == "DERIVED"
    loc = dcmread(study.series_by_role("localizer").files[0])
    if vendor == "siemens":
        assert {d.SequenceName for d in dwi} == {"*ep_b50t", "*ep_b400t", "*ep_b800t"}
        assert dcmread(study.series_by_role("ax_t2").files[0]).SequenceName.startswith("*h2d1")
    if vendor == "ge":
        assert "LOCALIZER" in loc.ImageType
        assert dwi[0][0x0043, 0x1039].value[0] in (50, 400, 800)
    if vendor == "philips":
        assert float(dwi[0][0x2001, 0x1003].value) == float(dwi[0].DiffusionBValue)
    ssh = dcmread(study.series_by_role("ax_t2").files[0])
    fs = dcmread(study.series_by_role("ax_t2_fs").files[0])
    assert "FS" not in ssh.ScanOptions
    assert "FS" in fs.ScanOptions
    assert int(ssh.EchoTrainLength) >= 64 > int(fs.EchoTrainLength)
    post = dcmread(study.series_by_role("dyn_portal").files[0])
    pre = dcmread(study.series_by_role("dyn_pre").files[0])
    assert post.ContrastBolusAgent
    assert "ContrastBolusAgent" not in pre
    assert post.MRAcquisitionType == "3D"
    opp_in = _read(study.series_by_role("t1_in_opp").files)
    echoes = sorted({float(d.EchoTime) for d in opp_in})
    assert len(echoes) == 2
    assert echoes[1] == pytest.approx(2 * echoes[0], rel=0.05)
    mrcp = dcmread(study.series_by_role("mrcp").files[0])
    assert float(mrcp.EchoTime) > 500
    assert float(mrcp.SliceThickness) >= 20
    names_seen = {str(dcmread(s.files[0]).PatientName) for s in study.series}
    assert len(names_seen) == 1
    assert names_seen.pop().startswith("PHANTOM^")


def test_geometry(full_studies: dict[str, PhantomStudy]) -> None:
    for vendor, study in full_studies.items():
        frames = set()
        for series in study.series:
            headers = _read(series.files, pixels=False)
            frames |= {h.FrameOfReferenceUID for h in headers}
            assert dcmread(series.files[0]).pixel_array.shape == (
                headers[0].Rows,
                headers[0].Columns,
            )
            assert {h.StudyInstanceUID for h in headers} == {study.study_instance_uid}
            orientations = {tuple(float(v) for v in h.ImageOrientationPatient) for h in headers}
            if series.role == "localizer":
                assert len(orientations) == 3
                continue
            (iop,) = orientations
            expected = (
                (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
                if series.role in ("cor_t2", "mrcp")
                else (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
            )
            assert iop == expected, series.role
            stacks: dict[object, list[Dataset]] = defaultdict(list)
            for h in headers:
                key = (h.get("EchoTime"), h.get("DiffusionBValue"))
                stacks[key].append(h)
                centre = (
                    np.asarray(h.ImagePositionPatient, float)
                    + np.asarray(iop[:3]) * float(h.PixelSpacing[1]) * (h.Columns - 1) / 2
                    + np.asarray(iop[3:]) * float(h.PixelSpacing[0]) * (h.Rows - 1) / 2
                )
                assert float(h.SliceLocation) == pytest.approx(np.dot(centre, _normal(h)), abs=0.01)
            for stack in stacks.values():
                d = np.sort([_along_normal(h) for h in stack])
                if len(d) > 1:
                    step = float(stack[0].SpacingBetweenSlices)
                    assert np.allclose(np.diff(d), step, atol=1e-3), series.role
                    assert float(stack[0].SliceThickness) <= step
        assert len(frames) == 1, vendor
    # Vendors number axial slices in opposite directions: the loader must sort by position.
    first = {
        v: _along_normal(dcmread(s.series_by_role("ax_t2").files[0]))
        for v, s in full_studies.items()
    }
    last = {
        v: _along_normal(dcmread(s.series_by_role("ax_t2").files[-1]))
        for v, s in full_studies.items()
    }
    assert first["siemens"] < last["siemens"]
    assert first["ge"] > last["ge"]


def _liver_like(
    pixels: npt.NDArray[np.float64], mask: npt.NDArray[np.bool_], band: npt.NDArray[np.float64]
) -> float:
    """Worst slice: the fraction of its (eroded) mask whose pixels lie in the liver's band."""
    inner = ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3)))
    like = (pixels >= band[0]) & (pixels <= band[1])
    return min(float(like[k][inner[k]].mean()) for k in range(len(mask)) if inner[k].sum() >= 15)


def test_mask_matches_written_target(full_studies: dict[str, PhantomStudy]) -> None:
    for study in full_studies.values():
        assert study.target_role == "ax_t2"
        pixels, headers = _sorted_volume(study.series_by_role("ax_t2").files)
        mask = study.liver_mask
        assert mask is not None
        assert mask.dtype == np.bool_
        assert mask.shape == pixels.shape
        assert study.liver_extent is not None
        assert study.caudate_index is not None
        first, last = study.liver_extent
        with_liver = np.flatnonzero(mask.any(axis=(1, 2)))
        assert (with_liver[0], with_liver[-1]) == (first, last)
        assert len(with_liver) == last - first + 1
        assert first < study.caudate_index < last
        spacing = [float(v) for v in headers[0].PixelSpacing]
        voxel_ml = spacing[0] * spacing[1] * float(headers[0].SpacingBetweenSlices) / 1000
        assert study.liver_volume_ml == pytest.approx(mask.sum() * voxel_ml)
        assert 600 < (study.liver_volume_ml or 0) < 2600

        core = ndimage.binary_erosion(mask, iterations=2, structure=np.ones((1, 3, 3)))
        band = np.percentile(pixels[core], [5, 95])
        # mask slice k covers liver-like pixels of image slice k, and only in this slice order
        assert _liver_like(pixels, mask, band) > 0.7
        assert _liver_like(pixels, mask[::-1], band) < 0.6
        assert _liver_like(pixels, np.roll(mask, 2, axis=0), band) < 0.6
        ring = ndimage.binary_dilation(mask, iterations=3, structure=np.ones((1, 3, 3))) & ~mask
        assert abs(np.median(pixels[ring]) - np.median(pixels[core])) > 0.1 * np.median(
            pixels[core]
        )


def test_caudate_index_is_the_widest_caudate_slice() -> None:
    for seed, cirrhotic in ((1, False), (2, True)):
        model = body_model(seed, cirrhotic=cirrhotic)
        geo = plan(model, 36, 96, stream(seed, "geometry", 96, 36))
        labels = painted_for(model, geo, "axial").labels
        area = (labels == Tissue.CAUDATE).sum(axis=(1, 2))
        vol = phantom_axial_t2(cirrhotic=cirrhotic, seed=seed, matrix=96)
        assert area[vol.caudate_index] >= 0.85 * area.max()
        # the caudate level lies between IVC and left lobe: all three are in that slice
        at = labels[vol.caudate_index]
        for tissue in (Tissue.IVC, Tissue.LIVER_LEFT, Tissue.LIVER_RIGHT, Tissue.CAUDATE):
            assert (at == tissue).any(), tissue


def _organ_stats(seed: int, cirrhotic: bool) -> tuple[float, float, float]:
    """(caudate / right-lobe volume, spleen ml, liver surface roughness) on a 2 mm grid."""
    model = body_model(seed, cirrhotic=cirrhotic)
    c = model.liver_centre
    grid = make_grid(
        AXIAL,
        c,
        rows=160,
        columns=160,
        fov_rows=320,
        fov_columns=320,
        slices=50,
        spacing=4.0,
        thickness=4.0,
    )
    labels = paint(model, grid).labels
    count = np.bincount(labels.ravel(), minlength=40)
    voxel_ml = 2.0 * 2.0 * 4.0 / 1000
    ratio = count[Tissue.CAUDATE] / count[Tissue.LIVER_RIGHT]
    liver = np.isin(labels, [Tissue.LIVER_RIGHT, Tissue.LIVER_LEFT, Tissue.CAUDATE])
    smooth = ndimage.gaussian_filter(liver.astype(float), sigma=(0, 2.5, 2.5)) > 0.5
    edge = liver & ~ndimage.binary_erosion(liver, structure=np.ones((1, 3, 3)))
    roughness = float((liver ^ smooth).sum() / edge.sum())
    return float(ratio), float(count[Tissue.SPLEEN] * voxel_ml), roughness


def test_cirrhosis_changes_the_anatomy() -> None:
    normal = [_organ_stats(s, False) for s in range(4)]
    cirrhotic = [_organ_stats(s, True) for s in range(4)]
    for (rn, sn, un), (rc, sc, uc) in zip(normal, cirrhotic, strict=True):
        assert rc > 1.5 * rn  # caudate hypertrophy, right-lobe atrophy
        assert sc > 1.5 * sn  # splenomegaly
        assert uc > 1.3 * un  # nodular surface
    assert 80 < np.mean([s for _, s, _ in normal]) < 350  # normal spleen volume, ml
    # seeds vary the anatomy
    assert len({round(r, 4) for r, _, _ in normal}) == len(normal)


def test_appearance_per_sequence(tmp_path: Path) -> None:
    """Liver darker than spleen on T2, fat bright without and dark with fat suppression, flow
    voids, fluid brightest on T2, spleen bright at b800, aorta bright in the arterial phase."""
    seed, matrix, slices = 7, 128, 12
    roles = ("ax_t2", "ax_t2_fs", "dwi", "dyn_pre", "dyn_arterial")
    study = generate_study(
        tmp_path / "s",
        cirrhotic=False,
        seed=seed,
        roles=roles,
        axial_t2_slices=slices,
        matrix=matrix,
    )
    model = body_model(seed, cirrhotic=False)
    geo = plan(model, slices, matrix, stream(seed, "geometry", matrix, slices))
    axial = painted_for(model, geo, "axial").labels

    def level(
        role: str, tissue: Tissue, labels: npt.NDArray[np.uint8] = axial, b: float | None = None
    ) -> float:
        files = study.series_by_role(role).files
        if b is not None:
            files = tuple(f for f in files if float(dcmread(f).DiffusionBValue) == b)
        pixels, _ = _sorted_volume(files)
        lab = labels
        if pixels.shape[1] != lab.shape[1]:
            r0 = (lab.shape[1] - pixels.shape[1]) // 2
            lab = lab[:, r0 : r0 + pixels.shape[1]]
        core = lab == tissue
        if tissue != Tissue.CSF:  # a thin ring around the cord
            core = ndimage.binary_erosion(core, structure=np.ones((1, 3, 3)))
        assert core.sum() > 10, tissue
        return float(np.median(pixels[core]))

    liver = level("ax_t2", Tissue.LIVER_RIGHT)
    assert liver < level("ax_t2", Tissue.SPLEEN)
    assert level("ax_t2", Tissue.SUBCUT_FAT) > 2 * liver
    assert level("ax_t2", Tissue.CSF) > 1.5 * level("ax_t2", Tissue.SUBCUT_FAT)
    assert level("ax_t2", Tissue.AORTA) < 0.5 * liver  # flow void
    assert level("ax_t2_fs", Tissue.SUBCUT_FAT) < level("ax_t2_fs", Tissue.LIVER_RIGHT)
    dwi = painted_for(model, geo, "dwi").labels
    assert level("dwi", Tissue.SPLEEN, dwi, 800.0) > 1.3 * level(
        "dwi", Tissue.LIVER_RIGHT, dwi, 800.0
    )
    dyn = painted_for(model, geo, "dynamic").labels
    pre, art = (
        level(r, Tissue.AORTA, dyn) / level(r, Tissue.MUSCLE, dyn)
        for r in ("dyn_pre", "dyn_arterial")
    )
    assert art > 2 * pre


@pytest.mark.integration
def test_dciodvfy_reports_no_errors(full_studies: dict[str, PhantomStudy]) -> None:
    assert DCIODVFY.exists(), "dicom3tools is needed: apt-get install dicom3tools"
    for study in full_studies.values():
        for series in study.series:
            run = subprocess.run(
                [str(DCIODVFY), str(series.files[0])],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            lines = (run.stdout + run.stderr).splitlines()
            errors = [ln for ln in lines if ln.startswith("Error")]
            assert not errors, (study.vendor, series.role, errors)
            assert any(ln.strip() == "MRImage" for ln in lines)


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
def test_transfer_syntaxes_round_trip(tmp_path: Path, syntax: str) -> None:
    args = {"cirrhotic": False, "seed": 9, "roles": ("ax_t2",), "axial_t2_slices": 3, "matrix": 48}
    ref = generate_study(tmp_path / "ref", transfer_syntax=ExplicitVRLittleEndian, **args)
    out = generate_study(tmp_path / "out", transfer_syntax=syntax, **args)
    assert syntax in SUPPORTED_TRANSFER_SYNTAXES
    for a, b in zip(ref.series[0].files, out.series[0].files, strict=True):
        da, db = dcmread(a), dcmread(b)
        assert db.file_meta.TransferSyntaxUID == syntax
        assert db.SOPInstanceUID == da.SOPInstanceUID
        assert np.array_equal(da.pixel_array, db.pixel_array)
        assert db.pixel_array.max() > 100


def test_jpeg_lossless_encoder_edge_values() -> None:
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    rng = np.random.default_rng(1)
    for bits in (8, 12, 16):
        frame = rng.integers(0, 1 << bits, size=(17, 23)).astype(np.uint16)
        frame[0, :3] = (0, (1 << bits) - 1, 0)  # largest jumps
        data = encapsulate([encode_sv1(frame, bits)])
        decoded, _ = get_decoder(JPEGLosslessSV1).as_array(
            data,
            rows=17,
            columns=23,
            samples_per_pixel=1,
            bits_allocated=8 if bits <= 8 else 16,
            bits_stored=bits,
            pixel_representation=0,
            photometric_interpretation="MONOCHROME2",
            number_of_frames=1,
        )
        assert np.array_equal(decoded, frame)
    with pytest.raises(ValueError, match="fit"):
        encode_sv1(np.full((2, 2), 300, np.uint16), 8)


def test_targets_and_invalid_arguments(tmp_path: Path) -> None:
    none = generate_study(
        tmp_path / "n", cirrhotic=False, seed=1, roles=("cor_t2", "dwi", "adc"), **SMALL
    )
    assert none.target_series_uid is None
    assert none.liver_mask is None
    assert none.caudate_index is None
    assert none.liver_volume_ml is None
    fs = generate_study(tmp_path / "f", cirrhotic=False, seed=1, roles=("ax_t2_fs", "dwi"), **SMALL)
    assert fs.target_role == "ax_t2_fs"
    assert fs.liver_mask is not None
    assert fs.liver_mask.shape[1] == dcmread(fs.series_by_role("ax_t2_fs").files[0]).Rows
    with pytest.raises(ValueError, match="unknown vendor"):
        generate_study(tmp_path / "x", cirrhotic=False, vendor="toshiba", **SMALL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="roles"):
        generate_study(tmp_path / "x", cirrhotic=False, roles=("ax_t3",), **SMALL)
    with pytest.raises(ValueError, match="dwi"):
        generate_study(tmp_path / "x", cirrhotic=False, roles=("adc",), **SMALL)
    with pytest.raises(ValueError, match="transfer syntax"):
        generate_study(
            tmp_path / "x",
            cirrhotic=False,
            roles=("ax_t2",),
            transfer_syntax="1.2.840.10008.1.2.4.50",
            **SMALL,
        )


def test_ascites_default_and_forced() -> None:
    drawn = [phantom_axial_t2(cirrhotic=True, seed=s, matrix=48, slices=6) for s in range(3)]
    assert all(v.cirrhotic for v in drawn)
    model = body_model(5, cirrhotic=True, ascites=True)
    geo = plan(model, 12, 64, stream(5, "geometry", 64, 12))
    assert (painted_for(model, geo, "axial").labels == Tissue.ASCITES).sum() > 50
    dry = body_model(5, cirrhotic=True, ascites=False)
    geo = plan(dry, 12, 64, stream(5, "geometry", 64, 12))
    assert not (painted_for(dry, geo, "axial").labels == Tissue.ASCITES).any()


def test_cli_writes_and_summarises(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "study"
    result = runner.invoke(
        app,
        [
            "phantom",
            str(out),
            "--cirrhotic",
            "--vendor",
            "ge",
            "--seed",
            "3",
            "--roles",
            "ax_t2,dwi,adc",
            "--slices",
            "8",
            "--matrix",
            "48",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [s["role"] for s in data["series"]] == ["ax_t2", "dwi", "adc"]
    assert [s["files"] for s in data["series"]] == [8, 24, 8]
    assert data["series"][0]["description"] == "Ax SSFSE T2"
    assert data["target_series_uid"] == data["series"][0]["series_instance_uid"]
    assert "PHANTOM^" not in result.output
    assert "PH-000003" not in result.output
    text = runner.invoke(
        app,
        [
            "phantom",
            str(tmp_path / "t"),
            "--normal",
            "--roles",
            "localizer,ax_t2",
            "--slices",
            "4",
            "--matrix",
            "32",
        ],
    )
    assert text.exit_code == 0, text.output
    assert "t2_haste_tra_mbh" in text.output
    assert "localizer" in text.output
    assert "PHANTOM^" not in text.output
    bad = runner.invoke(app, ["phantom", str(tmp_path / "b"), "--roles", "nope"])
    assert bad.exit_code == 2
    assert "unknown role" in unwrapped(bad.output)
    again = runner.invoke(app, ["phantom", str(out)])
    assert again.exit_code == 1
    assert "not empty" in unwrapped(again.output)


def test_vendor_type_lists_all() -> None:
    vendors: tuple[Vendor, ...] = VENDORS
    assert vendors == ("siemens", "ge", "philips")
