"""Inference wrappers and the pre/post-processing around them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch

from pipeline.bundle import Bundle, Normalisation, save_bundle
from pipeline.errors import BundleError, NotEvaluatedError
from pipeline.inference import ClassificationModel, SegmentationModel, resolve_device
from pipeline.networks import RESNET50, UNET_RESNET34, build_network
from pipeline.preprocess import (
    classification_unit_image,
    crop_box,
    fill_holes_per_slice,
    largest_component,
    liver_box,
    normalise_channels,
    scale_to_unit,
)
from pipeline.results import Volume
from tests.pipeline.test_bundle import manifest_fields


def _volume(
    pixels: np.ndarray, spacing: tuple[float, float] = (0.8, 0.9), thick: float = 5.0
) -> Volume:
    n = pixels.shape[0]
    return Volume(
        series_instance_uid="1.2.3",
        pixels=pixels.astype(np.float32),
        headers=tuple(pydicom.Dataset() for _ in range(n)),
        positions=np.array([[0.0, 0.0, thick * k] for k in range(n)]),
        row_cosine=np.array([1.0, 0.0, 0.0]),
        column_cosine=np.array([0.0, 1.0, 0.0]),
        pixel_spacing=spacing,
        slice_spacing=thick,
        frame_of_reference_uid="1.2.4",
    )


def _seg_bundle(tmp: Path, bias: float) -> Bundle:
    torch.manual_seed(0)
    state = build_network(UNET_RESNET34, 3, 1).state_dict()
    state["segmentation_head.0.weight"] = torch.zeros_like(state["segmentation_head.0.weight"])
    state["segmentation_head.0.bias"] = torch.full_like(state["segmentation_head.0.bias"], bias)
    return save_bundle(tmp / f"seg{bias}", manifest_fields("segmentation"), state)


def _cls_bundle(tmp: Path, mode: str, logits: tuple[float, float]) -> Bundle:
    torch.manual_seed(0)
    state = build_network(RESNET50, 3, 2).state_dict()
    state["fc.weight"] = torch.zeros_like(state["fc.weight"])
    state["fc.bias"] = torch.tensor(logits)
    fields: dict[str, Any] = manifest_fields("classification")
    fields["classification"]["mode"] = mode
    fields["classification"]["threshold"] = 0.6
    return save_bundle(tmp / f"cls-{mode}", fields, state)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    tmp = tmp_path_factory.mktemp("bundles")
    return {
        "all": _seg_bundle(tmp, 10.0),
        "none": _seg_bundle(tmp, -10.0),
        "masked": _cls_bundle(tmp, "masked", (0.0, 1.0)),
        "whole": _cls_bundle(tmp, "whole", (1.0, 0.0)),
    }


def test_scale_to_unit_volume_slice_and_mask_scopes() -> None:
    rng = np.random.default_rng(0)
    vol = rng.uniform(0, 1000, size=(3, 64, 64)).astype(np.float32)
    vol[1] *= 0.1
    unit = scale_to_unit(vol, Normalisation(scope="volume", low_percentile=0, high_percentile=100))
    assert unit.dtype == np.float32
    assert np.allclose(unit, (vol - vol.min()) / (vol.max() - vol.min()), atol=1e-6)
    per_slice = scale_to_unit(
        vol, Normalisation(scope="slice", low_percentile=0, high_percentile=100)
    )
    assert np.isclose(per_slice[1].max(), 1.0)
    assert np.isclose(per_slice[1].min(), 0.0)
    assert unit[1].max() < 0.2  # the dim slice stays dim with a volume scope
    mask = np.zeros((64, 64), bool)
    mask[10:20, 10:20] = True
    img = vol[0]
    scaled = scale_to_unit(
        img, Normalisation(scope="mask", low_percentile=0, high_percentile=100), mask
    )
    assert np.isclose(scaled[mask].min(), 0.0)
    assert np.isclose(scaled[mask].max(), 1.0)
    flat = scale_to_unit(np.full((4, 4), 7.0), Normalisation(scope="slice"))
    assert not flat.any()


def test_normalise_channels_is_imagenet_mean_std() -> None:
    unit = torch.rand(2, 1, 8, 8)
    norm = Normalisation()
    out = normalise_channels(unit, norm, 3)
    assert out.shape == (2, 3, 8, 8)
    for c in range(3):
        assert torch.allclose(out[:, c], (unit[:, 0] - norm.mean[c]) / norm.std[c], atol=1e-6)


def test_liver_box_is_square_with_margin_and_pads() -> None:
    mask = np.zeros((100, 100), bool)
    mask[10:30, 0:40] = True  # 20 x 40 box at the left edge
    r0, r1, c0, c1 = liver_box(mask, margin=0.1)
    assert r1 - r0 == c1 - c0 == 48
    assert c0 < 0  # reaches outside: padded
    crop = crop_box(np.ones((100, 100), np.float32), (r0, r1, c0, c1))
    assert crop.shape == (48, 48)
    assert crop[:, 0].sum() == 0
    assert crop[4:, -1].all()
    assert crop[:4].sum() == 0
    img = np.arange(100 * 100, dtype=np.float32).reshape(100, 100)
    unit = classification_unit_image(
        img, mask, Normalisation(scope="mask"), mode="masked", margin=0.0
    )
    assert unit.shape == (40, 40)
    assert unit[:10].sum() == 0  # rows outside the liver are zero
    with pytest.raises(ValueError, match="non-empty liver mask"):
        classification_unit_image(
            img, np.zeros_like(mask), Normalisation(), mode="masked", margin=0
        )


def test_largest_component_and_holes() -> None:
    mask = np.zeros((4, 20, 20), bool)
    mask[0:3, 2:12, 2:12] = True
    mask[1, 5:8, 5:8] = False  # a hole inside slice 1
    mask[3, 15:18, 15:18] = True  # a small separate blob
    kept = fill_holes_per_slice(largest_component(mask))
    assert not kept[3].any()
    assert kept[1, 6, 6]
    assert kept.sum() == 3 * 100


def test_segmentation_all_liver_area_and_volume(bundles: dict[str, Bundle]) -> None:
    model = SegmentationModel(bundles["all"], device="cpu", batch_size=2)
    assert model.info.task == "segmentation"
    pixels = np.random.default_rng(1).uniform(0, 500, size=(5, 40, 48))
    seg = model.predict(_volume(pixels))
    assert seg.mask.shape == (5, 40, 48)  # back at the series' matrix (input was 32 x 32)
    assert seg.mask.all()
    assert np.allclose(seg.area_mm2, 40 * 48 * 0.8 * 0.9)
    assert np.isclose(seg.volume_ml, 5 * 40 * 48 * 0.8 * 0.9 * 5.0 / 1000.0)


def test_segmentation_nothing_found(bundles: dict[str, Bundle]) -> None:
    seg = SegmentationModel(bundles["none"], device="cpu").predict(_volume(np.ones((3, 32, 32))))
    assert not seg.mask.any()
    assert seg.volume_ml == 0.0
    assert seg.area_mm2.shape == (3,)


def test_classification_masked_mode(bundles: dict[str, Bundle]) -> None:
    model = ClassificationModel(bundles["masked"], device="cpu")
    image = np.random.default_rng(2).uniform(0, 300, size=(50, 60))
    mask = np.zeros((50, 60), bool)
    mask[10:30, 5:25] = True
    result = model.predict(image, mask)
    expected = float(torch.sigmoid(torch.tensor(1.0)))
    assert np.isclose(result.probability, expected, atol=1e-3)
    assert result.present
    assert result.threshold == 0.6
    assert result.mode == "masked"
    assert result.label == "cirrhosis"
    for bad in (None, np.zeros_like(mask)):
        with pytest.raises(NotEvaluatedError) as info:
            model.predict(image, bad)
        assert info.value.code == "liver_not_covered"


def test_classification_whole_mode_ignores_mask(bundles: dict[str, Bundle]) -> None:
    model = ClassificationModel(bundles["whole"], device="cpu")
    result = model.predict(np.ones((40, 40)), None)
    assert np.isclose(result.probability, float(torch.sigmoid(torch.tensor(-1.0))), atol=1e-3)
    assert not result.present
    assert result.mode == "whole"


def test_wrong_task_and_device(bundles: dict[str, Bundle]) -> None:
    with pytest.raises(BundleError) as info:
        ClassificationModel(bundles["all"], device="cpu")
    assert info.value.code == "bundle_wrong_task"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")


def test_context_channels_are_the_neighbouring_slices() -> None:
    import torch

    from pipeline.preprocess import with_context

    volume = torch.arange(5, dtype=torch.float32).view(5, 1, 1).expand(5, 2, 2)
    stacked = with_context(volume, 1, 3, 99)
    assert stacked.shape == (2, 3, 2, 2)
    assert stacked[:, :, 0, 0].tolist() == [[2, 3, 4], [3, 4, 4]]  # edge slice repeats itself
    assert with_context(volume, 0).shape == (5, 1, 2, 2)


def test_flip_tta_makes_the_mask_mirror_with_the_image(tmp_path: Path) -> None:
    """With input.flip_tta the logits are the mean of the slice's and its mirror image's, so
    mirroring the input mirrors the mask exactly; without it an untrained network is not
    symmetric."""
    from pipeline.bundle import load_bundle
    from tests.bundles import write_test_bundles

    seg_path, _ = write_test_bundles(tmp_path / "b", seed=3)
    plain = load_bundle(seg_path)
    fields = plain.manifest.model_dump(mode="json")
    fields["input"]["flip_tta"] = True
    tta = save_bundle(tmp_path / "tta", fields, plain.state_dict)
    pixels = np.random.default_rng(0).gamma(2.0, 100.0, (4, 40, 40)).astype(np.float32)
    mirrored = pixels[:, :, ::-1].copy()
    model = SegmentationModel(tta, device="cpu")
    mask = model.segment(pixels, postprocess=False)
    assert np.array_equal(model.segment(mirrored, postprocess=False), mask[:, :, ::-1])
    untrained = SegmentationModel(plain, device="cpu")
    logits = [untrained.segment(p, postprocess=False) for p in (pixels, mirrored)]
    assert not np.array_equal(logits[1], logits[0][:, :, ::-1])
