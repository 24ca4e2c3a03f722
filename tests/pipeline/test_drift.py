"""Input drift: header values of a series against a bundle's training distribution."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from pydicom import dcmread
from typer.testing import CliRunner

from agent.cli import model as model_cli
from pipeline.bundle import Split, load_bundle, save_bundle
from pipeline.drift import NO_DISTRIBUTION, DriftTolerance, check_drift, drift_summary
from pipeline.input_distribution import (
    AcquisitionValues,
    TrainingDistribution,
    distribution_of,
    manufacturer_key,
)
from pipeline.phantoms import generate_study, phantom_axial_t2
from pipeline.training.cls import train_classification
from pipeline.training.data import ClsCase, load_classification_cases, training_distribution
from pipeline.training.loop import TrainConfig
from tests.bundles import write_test_bundles


def trained_on() -> TrainingDistribution:
    """Siemens and Philips at 1.5 T, TE 80-100 ms, TR 1000-1400 ms, 1.4-1.6 mm, 256/320."""
    series = [
        AcquisitionValues("dicom", "SIEMENS", 1.5, 80.0, 1000.0, (1.4, 1.4), 256, 256),
        AcquisitionValues("dicom", "Philips", 1.5, 100.0, 1400.0, (1.6, 1.6), 320, 320),
        AcquisitionValues("dicom", "SIEMENS", 1.5, 90.0, 1200.0, (1.5, 1.5), 256, 256),
    ]  # fmt: skip
    found = distribution_of(series)
    assert found is not None
    return found


IN_DISTRIBUTION = AcquisitionValues(
    "dicom", "Siemens Healthineers", 1.5, 92.0, 1100.0, (1.5, 1.5), 256, 256
)


def test_distribution_records_ranges_and_matrices() -> None:
    dist = trained_on()
    assert dist.cases == 3
    assert dist.manufacturers == ["Philips", "SIEMENS"]
    assert dist.field_strength_t is not None
    assert dist.field_strength_t.low == 1.5
    assert dist.echo_time_ms is not None
    assert (dist.echo_time_ms.low, dist.echo_time_ms.high) == (80.0, 100.0)
    assert dist.pixel_spacing_mm is not None
    assert dist.pixel_spacing_mm.high == 1.6
    assert dist.matrices == [(256, 256), (320, 320)]
    assert distribution_of([None, None]) is None


def test_in_distribution_study_is_not_flagged() -> None:
    result = check_drift(IN_DISTRIBUTION, trained_on(), model="cls 1")
    assert not result.flagged, result.reasons
    assert result.reasons == ()
    assert {c.name: c.ok for c in result.checks} == {
        "manufacturer": True,
        "field_strength_t": True,
        "echo_time_ms": True,
        "repetition_time_ms": True,
        "pixel_spacing_mm": True,
        "matrix": True,
    }


@pytest.mark.parametrize(
    ("change", "check", "words"),
    [
        ({"manufacturer": "ACME IMAGING"}, "manufacturer", "manufacturer 'ACME IMAGING'"),
        ({"field_strength_t": 3.0}, "field_strength_t", "field strength 3 T"),
        ({"echo_time_ms": 20.0}, "echo_time_ms", "echo time 20 ms"),
        ({"repetition_time_ms": 6000.0}, "repetition_time_ms", "repetition time 6e+03 ms"),
        ({"pixel_spacing_mm": (0.5, 0.5)}, "pixel_spacing_mm", "pixel spacing 0.5 mm"),
        ({"rows": 64, "columns": 64}, "matrix", "matrix 64 x 64"),
    ],
)
def test_each_kind_of_drift_is_flagged_with_its_reason(
    change: dict[str, object], check: str, words: str
) -> None:
    values = AcquisitionValues(**{**IN_DISTRIBUTION.__dict__, **change})  # type: ignore[arg-type]
    result = check_drift(values, trained_on(), model="cls 1")
    assert result.flagged
    assert len(result.reasons) == 1, result.reasons
    assert result.reasons[0].startswith(words), result.reasons
    assert [c.name for c in result.checks if c.ok is False] == [check]


def test_tolerance_decides_and_can_switch_off_the_manufacturer() -> None:
    values = AcquisitionValues(**{**IN_DISTRIBUTION.__dict__, "echo_time_ms": 120.0})
    assert not check_drift(values, trained_on()).flagged  # 100 ms + 25 % = 125 ms
    assert check_drift(values, trained_on(), DriftTolerance(echo_time=0.1)).flagged
    acme = AcquisitionValues(**{**IN_DISTRIBUTION.__dict__, "manufacturer": "ACME"})
    assert not check_drift(acme, trained_on(), DriftTolerance(manufacturer=False)).flagged
    with pytest.raises(ValueError, match="echo_time"):
        DriftTolerance(echo_time=-1)


def test_unknown_values_are_listed_and_never_flag() -> None:
    bare = AcquisitionValues("dicom")
    result = check_drift(bare, trained_on())
    assert not result.flagged
    assert all(c.ok is None for c in result.checks)
    nifti_only = distribution_of([AcquisitionValues("nifti", pixel_spacing_mm=(1.5, 1.5))])
    result = check_drift(
        AcquisitionValues(**{**IN_DISTRIBUTION.__dict__, "field_strength_t": 3.0}), nifti_only
    )
    assert not result.flagged  # the training data said nothing of field strength


def test_bundle_without_distribution_says_so_and_does_not_flag() -> None:
    result = check_drift(IN_DISTRIBUTION, None, model="old 0")
    assert (result.flagged, result.note) == (False, NO_DISTRIBUTION)
    summary = drift_summary([result], IN_DISTRIBUTION)
    assert summary["flagged"] is False
    assert summary["reasons"] == []
    assert summary["checked"]["note"] == NO_DISTRIBUTION


def test_summary_names_the_model_when_several_were_checked() -> None:
    odd = AcquisitionValues(**{**IN_DISTRIBUTION.__dict__, "field_strength_t": 3.0})
    results = [
        check_drift(odd, trained_on(), model="seg 1"),
        check_drift(odd, trained_on(), model="cls 2"),
    ]
    summary = drift_summary(results, odd)
    assert summary["flagged"] is True
    assert [r.split(":")[0] for r in summary["reasons"]] == ["seg 1", "cls 2"]
    assert summary["checked"]["series"]["field_strength_t"] == 3.0
    assert summary["checked"]["note"] is None


def test_manufacturer_names_of_one_vendor_compare_equal() -> None:
    assert manufacturer_key("SIEMENS") == manufacturer_key("Siemens Healthineers")
    assert manufacturer_key("GE MEDICAL SYSTEMS") == manufacturer_key("GE") == "ge"
    assert manufacturer_key("Philips Healthcare") == "philips"
    assert manufacturer_key("Toshiba") == manufacturer_key("Canon Medical Systems")
    assert manufacturer_key("Acme  Imaging ") == "acme imaging"


@pytest.mark.slow
def test_phantom_and_dicom_training_cases_carry_their_header_values(tmp_path: Path) -> None:
    """The values the DEMO training records for a phantom are those its DICOM files carry, and
    a DICOM training folder gives each case its series' values."""
    study = generate_study(
        tmp_path / "study", cirrhotic=False, seed=11, vendor="ge", matrix=128, roles=["ax_t2"]
    )
    target = study.series_by_role("ax_t2")
    header = AcquisitionValues.from_dataset(dcmread(target.files[0], stop_before_pixels=True))
    volume = phantom_axial_t2(cirrhotic=False, seed=11, vendor="ge", matrix=128)
    assert volume.acquisition is not None
    assert volume.acquisition.to_json() == header.to_json()
    assert header.manufacturer == "GE MEDICAL SYSTEMS"
    assert header.echo_time_ms is not None
    assert header.field_strength_t in (1.5, 3.0)
    assert (header.rows, header.columns) == (128, 128)

    data = tmp_path / "data"
    (data / "p1").mkdir(parents=True)
    for file in target.files:
        shutil.copy(file, data / "p1" / file.name)
    assert study.liver_mask is not None
    assert study.caudate_index is not None
    np.save(data / "mask_p1.npy", study.liver_mask.astype(np.uint8))
    (data / "labels.csv").write_text(f"case,label,slice\np1,normal,{study.caudate_index}\n")
    (case,) = load_classification_cases(data)
    assert case.acquisition == header
    recorded = training_distribution([case])
    assert recorded is not None
    assert recorded["sources"] == ["dicom"]
    assert recorded["manufacturers"] == ["GE MEDICAL SYSTEMS"]
    assert recorded["echo_time_ms"] == {"low": header.echo_time_ms, "high": header.echo_time_ms}


@pytest.mark.slow
def test_classifier_training_writes_the_distribution_of_its_training_split(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(6):
        mask = np.zeros((32, 32), bool)
        mask[8:24, 8:24] = True
        image = (mask * 200 + rng.normal(0, 10, (32, 32))).astype(np.float32)
        te = 80.0 + 4 * i
        values = AcquisitionValues("dicom", "SIEMENS", 1.5, te, 1200.0, (1.5, 1.5), 32, 32)
        cases.append(ClsCase(f"c{i}", image, mask, i % 2, values))
    split = Split(train=["c0", "c1", "c2", "c3"], val=["c4"], test=["c5"])
    bundle = train_classification(
        cases,
        tmp_path / "cls",
        TrainConfig(epochs=1, input_size=32, batch_size=4, name="t"),
        data_description="t",
        progress=False,
        split=split,
    )
    dist = load_bundle(bundle.path).manifest.training_distribution
    assert dist is not None
    assert dist.cases == 4  # the training split only
    assert dist.echo_time_ms is not None
    assert (dist.echo_time_ms.low, dist.echo_time_ms.high) == (80.0, 92.0)


@pytest.mark.slow
def test_training_records_the_distribution_in_the_manifest(tmp_path: Path) -> None:
    seg, cls = write_test_bundles(tmp_path / "old")
    assert load_bundle(cls).manifest.training_distribution is None  # old bundles still load
    values = [
        AcquisitionValues("phantom", "SIEMENS", 1.5, 90.0, 1200.0, (1.5, 1.5), 128, 128),
        AcquisitionValues("phantom", "GE MEDICAL SYSTEMS", 3.0, 85.0, 1500.0, (1.6, 1.6), 128, 128),
    ]  # fmt: skip
    cases = [
        ClsCase(f"c{i}", np.zeros((4, 4), np.float32), np.ones((4, 4), bool), i % 2, v)
        for i, v in enumerate(values)
    ]
    fields = load_bundle(cls).manifest.model_dump(mode="json")
    fields["training_distribution"] = training_distribution(cases)
    bundle = load_bundle(save_bundle(tmp_path / "new", fields, load_bundle(cls).state_dict).path)
    dist = bundle.manifest.training_distribution
    assert dist is not None
    assert dist.sources == ["phantom"]
    assert dist.manufacturers == ["GE MEDICAL SYSTEMS", "SIEMENS"]
    assert dist.field_strength_t is not None
    assert dist.field_strength_t.high == 3.0
    assert seg.is_dir()
    app = typer.Typer()
    model_cli.register(app)
    shown = CliRunner().invoke(app, ["model", "info", str(bundle.path)])
    assert shown.exit_code == 0, shown.output
    assert "manufacturers: GE MEDICAL SYSTEMS, SIEMENS" in shown.output
    assert "field strength: 1.5-3 T" in shown.output
    old = CliRunner().invoke(app, ["model", "info", str(cls)])
    assert "no training distribution recorded" in old.output
