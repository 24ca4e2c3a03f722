"""Tests for pipeline.run: the composed pipeline on phantom studies, its timings and its exits."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from pydicom import dcmread

from pipeline.bundle import save_bundle
from pipeline.errors import PipelineError
from pipeline.networks import RESNET50, UNET_RESNET34, build_network
from pipeline.phantoms import PhantomStudy, generate_study
from pipeline.results import Classification, LiverSegmentation, ModelInfo, Volume
from pipeline.run import STAGES, Models, PipelineOptions, result_to_json, run_pipeline
from pipeline.study_headers import scan_study
from tests.pipeline.test_bundle import manifest_fields

FIVE_ROLES = ("localizer", "cor_t2", "ax_t2", "dwi", "adc")


class StandInSegmentation:
    """Returns a given mask (the phantom's truth): the network is not under test here."""

    info = ModelInfo("stand-in-segmentation", "0", "segmentation", "none", True, "0" * 64)

    def __init__(self, mask: npt.NDArray[np.bool_] | None, fail: bool = False) -> None:
        self.mask = mask
        self.fail = fail
        self.volumes: list[Volume] = []

    def predict(self, volume: Volume) -> LiverSegmentation:
        self.volumes.append(volume)
        if self.fail:
            raise PipelineError("inference_failed", "the segmentation network failed")
        mask = self.mask if self.mask is not None else np.zeros(volume.shape, bool)
        assert mask.shape == volume.shape
        area = mask.sum(axis=(1, 2)) * volume.pixel_spacing[0] * volume.pixel_spacing[1]
        return LiverSegmentation(mask, area.astype(np.float64), float(area.sum()) / 1000.0)


class StandInClassification:
    """Records what it is given; probability = fraction of the slice inside the mask."""

    info = ModelInfo("stand-in-classification", "0", "classification", "none", True, "1" * 64)

    def __init__(self) -> None:
        self.calls: list[tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]] = []

    def predict(
        self, image: npt.NDArray[Any], liver_mask: npt.NDArray[np.bool_] | None
    ) -> Classification:
        self.calls.append((image, liver_mask))
        assert liver_mask is not None
        probability = float(liver_mask.mean())
        return Classification(probability, probability >= 0.5, 0.5, "masked")


def stand_in_models(mask: npt.NDArray[np.bool_] | None, fail: bool = False) -> Models:
    return Models(StandInSegmentation(mask, fail), StandInClassification())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> PhantomStudy:
    out = tmp_path_factory.mktemp("phantom") / "study"
    return generate_study(out, cirrhotic=True, seed=2, roles=FIVE_ROLES, axial_t2_slices=30,
                          matrix=128)  # fmt: skip


def test_evaluated_study_runs_every_stage(phantom: PhantomStudy) -> None:
    models = stand_in_models(phantom.liver_mask)
    result = run_pipeline(scan_study([phantom.path]), models)

    assert result.evaluated, result.reason
    assert result.reason_code is None
    assert set(result.timings) == {*STAGES, "total"}
    assert all(t >= 0 for t in result.timings.values())
    assert result.timings["total"] >= sum(result.timings[s] for s in STAGES)
    assert result.study_instance_uid == phantom.study_instance_uid
    assert result.selection.series_instance_uid == phantom.target_series_uid
    target = next(s for s in phantom.series if s.role == "ax_t2")
    assert result.volume is not None
    assert result.volume.shape[0] == len(target.files)
    assert result.caudate is not None
    assert result.segmentation is not None
    first, last = phantom.liver_extent or (0, 0)
    assert first < result.caudate.index < last
    assert result.caudate.sop_instance_uid == result.volume.sop_instance_uids[result.caudate.index]
    assert result.caudate.liver_area_mm2 == result.segmentation.area_mm2[result.caudate.index]
    # the classifier got the caudate slice and its liver mask
    ((image, mask),) = models.classification.calls  # type: ignore[attr-defined]
    np.testing.assert_array_equal(image, result.volume.pixels[result.caudate.index])
    np.testing.assert_array_equal(mask, result.segmentation.mask[result.caudate.index])
    assert result.classification is not None
    assert result.classification.probability == pytest.approx(float(mask.mean()))
    assert result.segmentation_model == StandInSegmentation.info
    assert result.classification_model == StandInClassification.info
    assert str(result.reference.StudyInstanceUID) == phantom.study_instance_uid


def test_result_to_json_has_what_run_prints(phantom: PhantomStudy) -> None:
    result = run_pipeline(scan_study([phantom.path]), stand_in_models(phantom.liver_mask))
    data = result_to_json(result)
    assert data["evaluated"] is True
    assert data["series"]["series_instance_uid"] == phantom.target_series_uid
    target = next(s for s in phantom.series if s.role == "ax_t2")
    assert data["series"]["description"] == target.description
    assert result.caudate is not None
    assert data["slice"]["index"] == result.caudate.index
    assert data["slice"]["sop_instance_uid"] == result.caudate.sop_instance_uid
    assert data["classification"]["label"] in ("cirrhosis", "no cirrhosis")
    assert data["liver_volume_ml"] == pytest.approx(result.segmentation.volume_ml, abs=0.05)  # type: ignore[union-attr]
    assert data["models"]["segmentation"]["demo"] is True
    assert set(data["timings"]) == {*STAGES, "total"}
    assert len(data["selection"]["candidates"]) == len(FIVE_ROLES)


def test_caudate_fraction_option_moves_the_slice(phantom: PhantomStudy) -> None:
    study = scan_study([phantom.path])
    models = stand_in_models(phantom.liver_mask)
    high = run_pipeline(study, models, PipelineOptions(caudate_fraction=0.25)).caudate
    low = run_pipeline(study, models, PipelineOptions(caudate_fraction=0.65)).caudate
    assert high is not None
    assert low is not None
    assert high.index > low.index  # axial slices sorted feet to head: cranial is higher


def test_no_axial_t2_is_not_evaluated_with_the_candidates_reasons(tmp_path: Path) -> None:
    roles = ("localizer", "cor_t2", "dwi", "adc")
    phantom = generate_study(tmp_path / "s", cirrhotic=False, seed=4, roles=roles, matrix=64)
    models = stand_in_models(None)
    result = run_pipeline(scan_study([phantom.path]), models)
    assert not result.evaluated
    assert result.reason_code == "no_axial_t2"
    assert result.reason is not None
    assert result.reason.startswith("no axial T2-weighted series in the study (")
    for series in phantom.series:
        assert series.description in result.reason
    assert set(result.timings) == {"select", "total"}
    assert result.selection.series_instance_uid is None
    assert len(result.selection.candidates) == len(roles)
    assert result.volume is None
    assert result.caudate is None
    assert models.segmentation.volumes == []  # type: ignore[attr-defined]
    assert result.segmentation_model is not None


def test_not_evaluated_at_localise_keeps_what_was_computed(phantom: PhantomStudy) -> None:
    result = run_pipeline(scan_study([phantom.path]), stand_in_models(None))  # empty mask
    assert not result.evaluated
    assert result.reason_code == "liver_not_covered"
    assert set(result.timings) == {"select", "load", "segment", "localise", "total"}
    assert result.volume is not None
    assert result.segmentation is not None
    assert result.caudate is None
    assert result.classification is None


def test_not_evaluated_at_load(phantom: PhantomStudy, tmp_path: Path) -> None:
    copy = tmp_path / "study"
    shutil.copytree(phantom.path, copy)
    target = next(s for s in phantom.series if s.role == "ax_t2")
    victim = copy / target.files[5].relative_to(phantom.path)
    ds = dcmread(victim)
    ds.PixelSpacing = [float(ds.PixelSpacing[0]) * 1.5, float(ds.PixelSpacing[1]) * 1.5]
    ds.save_as(victim)
    result = run_pipeline(scan_study([copy]), stand_in_models(phantom.liver_mask))
    assert not result.evaluated
    assert result.reason_code == "inconsistent_geometry"
    assert result.selection.series_instance_uid == phantom.target_series_uid
    assert "load" in result.timings
    assert "segment" not in result.timings
    assert result.volume is None


def test_other_pipeline_errors_propagate(phantom: PhantomStudy, tmp_path: Path) -> None:
    study = scan_study([phantom.path])
    with pytest.raises(PipelineError) as info:
        run_pipeline(study, stand_in_models(phantom.liver_mask, fail=True))
    assert info.value.code == "inference_failed"
    options = PipelineOptions(selection_rules=tmp_path / "missing.yaml")
    with pytest.raises(PipelineError) as info:
        run_pipeline(study, stand_in_models(phantom.liver_mask), options)
    assert info.value.code == "invalid_selection_rules"


@pytest.fixture(scope="module")
def bundle_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny-input bundles: segmentation says "liver" everywhere, classifier logits (0, 1)."""
    tmp = tmp_path_factory.mktemp("bundles")
    torch.manual_seed(0)
    seg_state = build_network(UNET_RESNET34, 3, 1).state_dict()
    head = "segmentation_head.0"
    seg_state[f"{head}.weight"] = torch.zeros_like(seg_state[f"{head}.weight"])
    seg_state[f"{head}.bias"] = torch.full_like(seg_state[f"{head}.bias"], 10.0)
    cls_state = build_network(RESNET50, 3, 2).state_dict()
    cls_state["fc.weight"] = torch.zeros_like(cls_state["fc.weight"])
    cls_state["fc.bias"] = torch.tensor([0.0, 1.0])
    seg = save_bundle(tmp / "seg", manifest_fields("segmentation"), seg_state)
    cls = save_bundle(tmp / "cls", manifest_fields("classification"), cls_state)
    return {"seg": seg.path, "cls": cls.path}


@pytest.mark.slow
def test_real_bundles_through_models_load(
    phantom: PhantomStudy, bundle_paths: dict[str, Path]
) -> None:
    models = Models.load(bundle_paths["seg"], bundle_paths["cls"], device="cpu")
    study = scan_study([phantom.path])
    everywhere = run_pipeline(study, models)
    # liver on every pixel of every slice: cut at both ends of the series
    assert not everywhere.evaluated
    assert everywhere.reason_code == "liver_not_covered"
    assert everywhere.segmentation is not None
    assert everywhere.segmentation.mask.all()
    assert set(everywhere.timings) == {"select", "load", "segment", "localise", "total"}
    assert everywhere.segmentation_model == models.segmentation.info

    # the real classifier behind the phantom's true liver mask
    mixed = Models(StandInSegmentation(phantom.liver_mask), models.classification)  # type: ignore[arg-type]
    result = run_pipeline(study, mixed)
    assert result.evaluated
    assert result.classification is not None
    assert result.classification.probability == pytest.approx(1 / (1 + np.exp(-1.0)), abs=1e-4)
    assert result.classification.present
    assert result.classification_model is not None
    assert result.classification_model.name == "test-bundle"
