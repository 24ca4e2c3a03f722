"""The OpenVINO runtime (pipeline.openvino_runtime): in float32 the same masks and probabilities
as PyTorch float32 (mask Dice >= 0.999, probability within 0.01), in bfloat16 no further from
them than PyTorch's bfloat16; converted models kept in a cache that a damaged entry cannot spoil;
the runtime choice itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

from pipeline.bundle import Bundle, load_bundle
from pipeline.errors import BundleError
from pipeline.inference import ClassificationModel, SegmentationModel, resolve_runtime
from pipeline.openvino_runtime import openvino_available
from tests.bundles import write_test_bundles
from tests.chaos import CHAOS, requires_chaos

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not openvino_available(), reason="openvino is not installed"),
]


def _precision(bundle: Bundle, precision: str) -> Bundle:
    manifest = bundle.manifest.model_copy(update={"precision": precision})
    return dataclasses.replace(bundle, manifest=manifest)


def _dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    return 2.0 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum())


@requires_chaos
def test_liver_masks_on_real_anatomy_match_pytorch(chaos_segmentation_bundle: Path) -> None:
    """float32: the issue's parity criterion (Dice >= 0.999 against PyTorch float32). bfloat16
    rounds every activation, so its masks differ from float32 in any runtime (measured with
    trained models in docs/benchmarks.md 'CPU inference'); OpenVINO's must stay as close to
    float32 as PyTorch's own bfloat16 autocast is."""
    from pipeline.training.data import load_segmentation_cases

    bundle = load_bundle(chaos_segmentation_bundle)
    reference = SegmentationModel(_precision(bundle, "float32"), "cpu")
    torch_bf16 = SegmentationModel(_precision(bundle, "bfloat16"), "cpu")
    fast = {
        precision: SegmentationModel(_precision(bundle, precision), "cpu", runtime="openvino")
        for precision in ("float32", "bfloat16")
    }
    assert {model.runtime for model in fast.values()} == {"openvino"}
    for case in load_segmentation_cases(CHAOS, case_ids=["3", "10"]):  # never trained on
        expected = reference.segment(case.pixels)
        assert expected.sum() > 10_000  # a real liver, not an empty mask
        assert _dice(fast["float32"].segment(case.pixels), expected) >= 0.999
        bf16 = _dice(fast["bfloat16"].segment(case.pixels), expected)
        assert bf16 >= 0.995
        assert bf16 >= _dice(torch_bf16.segment(case.pixels), expected) - 0.001


def test_probabilities_match_pytorch_float32_within_a_hundredth(tmp_path: Path) -> None:
    _, cls_path = write_test_bundles(tmp_path, input_size=64, seed=3)
    bundle = load_bundle(cls_path)
    # the test bundle's head is shrunk so that it always says ~0.73; undo that so that the
    # probability depends on the slice and a wrong conversion would show
    state = dict(bundle.state_dict)
    state["fc.weight"] = state["fc.weight"] * 2e3
    bundle = dataclasses.replace(bundle, state_dict=state)
    rng = np.random.default_rng(0)
    images = [rng.normal(300, 80, (96, 96)).astype(np.float32) for _ in range(6)]
    masks = [np.zeros((96, 96), bool) for _ in images]
    for k, mask in enumerate(masks):
        mask[20 + k : 70, 15 : 60 + k] = True
    reference = ClassificationModel(_precision(bundle, "float32"), "cpu")
    expected = reference.probabilities(images, masks)
    assert float(expected.max() - expected.min()) > 0.03  # the slices are told apart
    for precision, tolerance in (("float32", 0.01), ("bfloat16", 0.03)):
        fast = ClassificationModel(_precision(bundle, precision), "cpu", runtime="openvino")
        got = fast.probabilities(images, masks)
        assert np.abs(got - expected).max() <= tolerance, precision


def test_converted_models_are_cached_by_weights_and_a_damaged_entry_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openvino as ov

    seg_path, _ = write_test_bundles(tmp_path / "bundles", input_size=32)
    bundle = load_bundle(seg_path)
    cache = tmp_path / "cache"
    pixels = np.random.default_rng(1).normal(200, 50, (3, 40, 40)).astype(np.float32)
    first = SegmentationModel(bundle, "cpu", runtime="openvino", cache=cache)
    (entry,) = (cache / "openvino").iterdir()
    assert entry.name.startswith(bundle.info.sha256[:32])
    assert "-3x32x32-" in entry.name
    assert {p.name for p in entry.iterdir()} == {"model.xml", "model.bin"}
    expected = first.segment(pixels, postprocess=False)

    conversions: list[int] = []
    real_convert = ov.convert_model

    def counting_convert(*args: object, **kwargs: object) -> object:
        conversions.append(1)
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(ov, "convert_model", counting_convert)
    again = SegmentationModel(bundle, "cpu", runtime="openvino", cache=cache)
    assert conversions == []  # read from the cache
    assert np.array_equal(again.segment(pixels, postprocess=False), expected)

    (entry / "model.bin").write_bytes(b"\0" * 100)  # damaged (a full disk, a crash)
    repaired = SegmentationModel(bundle, "cpu", runtime="openvino", cache=cache)
    assert conversions == [1]  # converted again
    assert np.array_equal(repaired.segment(pixels, postprocess=False), expected)
    assert (entry / "model.bin").stat().st_size > 100_000  # and the entry was replaced

    # other weights, another entry: a changed bundle never meets a stale model
    other_path, _ = write_test_bundles(tmp_path / "other", input_size=32, seed=5)
    SegmentationModel(load_bundle(other_path), "cpu", runtime="openvino", cache=cache)
    assert len(list((cache / "openvino").iterdir())) == 2


def test_auto_falls_back_to_torch_where_openvino_cannot_load_a_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.openvino_runtime as runtime_module

    class Refuses:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("Exception from src/inference/src/cpp/core.cpp: unsupported CPU")

    monkeypatch.setattr(runtime_module, "OpenVinoNetwork", Refuses)
    seg_path, _ = write_test_bundles(tmp_path, input_size=32)
    bundle = load_bundle(seg_path)
    model = SegmentationModel(bundle, "cpu", runtime="auto")
    assert model.runtime == "torch"  # and it still segments
    assert model.segment(np.full((2, 32, 32), 100.0, np.float32)).shape == (2, 32, 32)
    with pytest.raises(BundleError, match="OpenVINO could not load") as err:
        SegmentationModel(bundle, "cpu", runtime="openvino")  # asked for by name: an error
    assert err.value.code == "runtime_unavailable"


def test_the_runtime_choice() -> None:
    cpu = torch.device("cpu")
    assert resolve_runtime("auto", cpu) == "openvino"
    assert resolve_runtime("torch", cpu) == "torch"
    assert resolve_runtime("auto", torch.device("cuda")) == "torch"
    with pytest.raises(BundleError, match="CPU only") as err:
        resolve_runtime("openvino", torch.device("cuda"))
    assert err.value.code == "runtime_unavailable"
    with pytest.raises(ValueError, match="runtime must be one of"):
        resolve_runtime("tensorrt", cpu)


def test_the_agent_setting_defaults_to_auto_and_refuses_unknown_runtimes() -> None:
    from pydantic import ValidationError

    from agent.settings import Runtime, load_settings

    assert load_settings(None).model.runtime == Runtime.AUTO
    assert load_settings(None, model={"runtime": "torch"}).model.runtime == Runtime.TORCH
    with pytest.raises(ValidationError, match="runtime"):
        load_settings(None, model={"runtime": "tensorrt"})
