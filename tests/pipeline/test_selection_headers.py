"""Header builders for the selection tests (vendor-style MR series as small Part 10 files),
and tests of the features the selector reads from them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from pipeline.results import SeriesCandidate, SeriesSelection
from pipeline.selection import load_rules, select_t2_series, series_features
from pipeline.selection.features import normalise_text, orientation_of
from pipeline.study_headers import scan_study

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def tilted_axial(deg: float) -> tuple[float, ...]:
    """Axial plane tilted about the x axis by ``deg`` degrees."""
    r = math.radians(deg)
    return (1.0, 0.0, 0.0, 0.0, math.cos(r), math.sin(r))


@dataclass
class Written:
    """A series written to disk by :func:`write_series`."""

    uid: str
    description: str
    paths: list[Path]


def write_series(
    folder: Path,
    study_uid: str,
    number: int,
    description: str,
    *,
    n: int = 20,
    iop: Sequence[float] = AXIAL,
    spacing: float = 6.0,
    thickness: float | None = None,
    te: float | None = 90.0,
    tr: float | None = 1500.0,
    scanning_sequence: str | list[str] | None = "SE",
    sequence_name: str | None = None,
    protocol: str | None = None,
    image_type: list[str] | None = None,
    modality: str = "MR",
    sop_class: str = MRImageStorage,
    acquisition: str = "2D",
    b_values: Sequence[float] | None = None,
    b_value_style: str = "standard",
    extra: dict[str, Any] | None = None,
    positions: Sequence[float] | None = None,
    per_image: list[dict[str, Any]] | None = None,
) -> Written:
    """Write one series as ``n`` Part 10 files with 8x8 pixels; return its UID and paths.

    With ``b_values`` each position is repeated once per b-value, the value written in the
    standard DiffusionBValue or in a vendor's private element (``b_value_style`` siemens / ge /
    philips / standard). ``per_image`` dicts override attributes image by image (3-plane
    localizers).
    """
    series_uid = generate_uid()
    out_dir = folder / f"s{number:03d}"
    out_dir.mkdir(parents=True, exist_ok=True)
    row = np.asarray(iop[:3], dtype=float)
    col = np.asarray(iop[3:], dtype=float)
    normal = np.cross(row, col)
    along = list(positions) if positions is not None else [k * spacing for k in range(n)]
    bs: Sequence[float | None] = b_values if b_values else [None]
    paths = []
    index = 0
    for offset in along:
        for b in bs:
            ds = _base(study_uid, series_uid, number, index + 1, modality, sop_class)
            ds.SeriesDescription = description
            ds.ProtocolName = description if protocol is None else protocol
            ds.ImageType = image_type or ["ORIGINAL", "PRIMARY", "M", "ND"]
            ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
            origin = np.asarray([-100.0, -100.0, 0.0]) + offset * normal
            ds.ImagePositionPatient = [f"{v:.4f}" for v in origin]
            ds.SliceThickness = thickness if thickness is not None else spacing
            ds.MRAcquisitionType = acquisition
            if te is not None:
                ds.EchoTime = te
            if tr is not None:
                ds.RepetitionTime = tr
            if scanning_sequence is not None:
                ds.ScanningSequence = scanning_sequence
            if sequence_name is not None:
                ds.SequenceName = sequence_name
            if b is not None:
                _write_b_value(ds, b, b_value_style)
            for keyword, value in (extra or {}).items():
                setattr(ds, keyword, value)
            if per_image is not None:
                for keyword, value in per_image[index % len(per_image)].items():
                    setattr(ds, keyword, value)
            path = out_dir / f"i{index:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
            index += 1
    return Written(series_uid, description, paths)


def _base(
    study_uid: str, series_uid: str, number: int, instance: int, modality: str, sop_class: str
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    sop_uid = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.Modality = modality
    ds.PatientName = "Selection^Test"
    ds.PatientID = "SEL-1"
    ds.SeriesNumber = number
    ds.InstanceNumber = instance
    ds.PixelSpacing = [1.5, 1.5]
    ds.Rows = 8
    ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.full((8, 8), instance, dtype=np.uint16).tobytes()
    return ds


def _write_b_value(ds: Dataset, b: float, style: str) -> None:
    if style == "standard":
        ds.DiffusionBValue = b
    elif style == "siemens":
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", int(b))
    elif style == "ge":
        block = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        block.add_new(0x39, "IS", [1_000_000_000 + int(b), 8, 0, 0])
    elif style == "philips":
        ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x03, "FL", b)
    else:
        raise ValueError(style)


def features_of(written: Written, folder: Path) -> Any:
    study = scan_study([folder])
    series = study.series_by_uid(written.uid)
    return series_features(series, load_rules().thresholds)


def select(folder: Path) -> SeriesSelection:
    return select_t2_series(scan_study([folder]))


def candidate(selection: SeriesSelection, written: Written) -> SeriesCandidate:
    return next(c for c in selection.candidates if c.series_instance_uid == written.uid)


def assert_rejected(selection: SeriesSelection, written: Written, words: tuple[str, ...]) -> None:
    c = candidate(selection, written)
    assert not c.eligible, f"{written.description} should be rejected: {c.reasons}"
    rejections = [r for r in c.reasons if r.startswith("rejected:")]
    for word in words:
        assert any(word.lower() in r.lower() for r in rejections), (word, c.reasons)


# Tests of the feature extraction ------------------------------------------------------------


@pytest.mark.parametrize(
    ("iop", "plane", "axis", "angle"),
    [
        (AXIAL, "axial", "z", 0.0),
        (CORONAL, "coronal", "y", 0.0),
        (SAGITTAL, "sagittal", "x", 0.0),
        (tilted_axial(15), "axial", "z", 15.0),
        (tilted_axial(40), "oblique", "z", 40.0),
        (tilted_axial(62), "coronal", "y", 28.0),
    ],
)
def test_orientation_from_the_normal(
    iop: tuple[float, ...], plane: str, axis: str, angle: float
) -> None:
    o = orientation_of(iop, 30.0)
    assert o is not None
    assert (o.plane, o.axis) == (plane, axis)
    assert o.angle_deg == pytest.approx(angle, abs=0.1)


def test_orientation_rejects_malformed_values() -> None:
    assert orientation_of([1, 0, 0, 1, 0, 0], 30.0) is None  # parallel: no normal
    assert orientation_of([1, 0, 0], 30.0) is None


def test_normalise_text_reads_underscores_as_spaces() -> None:
    assert normalise_text("T2W_SSh_TSE") == "t2w ssh tse"
    assert normalise_text("  Ax  SSFSE T2 ") == "ax ssfse t2"
    assert normalise_text(None) == ""


@pytest.mark.parametrize("style", ["standard", "siemens", "ge", "philips"])
def test_b_values_from_standard_and_private_elements(tmp_path: Path, style: str) -> None:
    written = write_series(
        tmp_path,
        generate_uid(),
        7,
        "",
        n=3,
        te=70,
        scanning_sequence="EP",
        b_values=[50, 400, 800],
        b_value_style=style,
    )
    f = features_of(written, tmp_path)
    assert f.b_values == (50.0, 400.0, 800.0)
    assert f.n_images == 9
    assert f.n_positions == 3
    assert not f.regular_stack  # three images per position
    assert "repeat a position" in f.stack_note


def test_stack_regularity_and_gaps(tmp_path: Path) -> None:
    study = generate_uid()
    regular = write_series(tmp_path, study, 1, "regular", n=12, spacing=5.0)
    gappy = write_series(tmp_path, study, 2, "gappy", positions=[0, 5, 10, 25, 30, 35])
    f = features_of(regular, tmp_path)
    assert (f.n_positions, f.regular_stack) == (12, True)
    assert f.slice_spacing == pytest.approx(5.0)
    g = features_of(gappy, tmp_path)
    assert not g.regular_stack
    assert "gaps 5.0-15.0 mm" in g.stack_note


def test_features_take_the_most_common_value_and_list_every_echo(tmp_path: Path) -> None:
    per_image = [{"EchoTime": 80.0}, {"EchoTime": 80.0}, {"EchoTime": 160.0}]
    written = write_series(tmp_path, generate_uid(), 3, "T2 ME", n=6, per_image=per_image)
    f = features_of(written, tmp_path)
    assert f.echo_time == 80.0
    assert f.echo_times == (80.0, 160.0)
    assert f.texts["description"] == "t2 me"
