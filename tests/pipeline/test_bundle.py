"""Model bundles: round trip, checksum and manifest checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.bundle import MANIFEST, WEIGHTS, Normalisation, load_bundle, save_bundle
from pipeline.errors import BundleError
from pipeline.networks import RESNET50, UNET_RESNET34, build_network


def manifest_fields(task: str = "segmentation") -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "test-bundle",
        "version": "0.1",
        "task": task,
        "network": {
            "architecture": UNET_RESNET34 if task == "segmentation" else RESNET50,
            "in_channels": 3,
            "classes": 1 if task == "segmentation" else 2,
        },
        "input": {"size": [32, 32], "normalisation": Normalisation().model_dump(), "channels": 3},
        "precision": "float32",
        "intended_use": "tests only",
        "demo": False,
        "training": {
            "data": "none",
            "cases": 0,
            "split": {"train": [], "val": [], "test": []},
            "seed": 0,
            "epochs": 0,
            "best_epoch": 0,
            "metrics": {},
        },
    }
    if task == "classification":
        fields["classification"] = {"threshold": 0.5, "mode": "masked", "crop_margin": 0.1}
    return fields


@pytest.fixture(scope="module")
def unet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_network(UNET_RESNET34, 3, 1).state_dict()


def test_round_trip(tmp_path: Path, unet_state: dict[str, torch.Tensor]) -> None:
    written = save_bundle(tmp_path / "b", manifest_fields(), unet_state)
    loaded = load_bundle(tmp_path / "b")
    assert loaded.manifest == written.manifest
    assert loaded.manifest.format == "liver-agent-bundle/1"
    assert set(loaded.state_dict) == set(unet_state)
    for key, value in unet_state.items():
        assert torch.equal(loaded.state_dict[key], value), key
    info = loaded.info
    assert (info.name, info.version, info.task, info.architecture, info.demo) == (
        "test-bundle",
        "0.1",
        "segmentation",
        UNET_RESNET34,
        False,
    )
    assert info.sha256 == loaded.manifest.weights[WEIGHTS]
    net = loaded.build()
    assert not net.training
    assert torch.equal(net.state_dict()["encoder.conv1.weight"], unet_state["encoder.conv1.weight"])
    assert not list((tmp_path).glob(".b.*"))  # no temporary folder left


def test_one_altered_byte_is_refused(tmp_path: Path, unet_state: dict[str, torch.Tensor]) -> None:
    save_bundle(tmp_path / "b", manifest_fields(), unet_state)
    weights = tmp_path / "b" / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError) as info:
        load_bundle(tmp_path / "b")
    assert info.value.code == "bundle_checksum"
    assert info.value.message.startswith(f"{WEIGHTS}: sha256 ")
    assert "does not match the manifest" in info.value.message


def test_missing_field_is_named(tmp_path: Path, unet_state: dict[str, torch.Tensor]) -> None:
    save_bundle(tmp_path / "b", manifest_fields(), unet_state)
    path = tmp_path / "b" / MANIFEST
    data = json.loads(path.read_text())
    del data["version"]
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError) as info:
        load_bundle(tmp_path / "b")
    assert info.value.code == "bundle_invalid"
    assert "manifest.json: field 'version' is missing" in info.value.message


def test_nested_missing_and_extra_fields(
    tmp_path: Path, unet_state: dict[str, torch.Tensor]
) -> None:
    save_bundle(tmp_path / "b", manifest_fields(), unet_state)
    path = tmp_path / "b" / MANIFEST
    data = json.loads(path.read_text())
    del data["training"]["seed"]
    data["surprise"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError) as info:
        load_bundle(tmp_path / "b")
    assert "field 'training.seed' is missing" in info.value.message
    assert "field 'surprise' is not allowed" in info.value.message


def test_missing_weights_and_manifest(tmp_path: Path, unet_state: dict[str, torch.Tensor]) -> None:
    with pytest.raises(BundleError, match="does not exist") as info:
        load_bundle(tmp_path / "nothing")
    assert info.value.code == "bundle_missing"
    save_bundle(tmp_path / "b", manifest_fields(), unet_state)
    (tmp_path / "b" / WEIGHTS).unlink()
    with pytest.raises(BundleError, match="listed in the manifest, not found"):
        load_bundle(tmp_path / "b")
    (tmp_path / "b" / MANIFEST).unlink()
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        load_bundle(tmp_path / "b")


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    resnet_state = build_network(RESNET50, 3, 2).state_dict()
    with pytest.raises(BundleError, match=r"weights do not fit smp\.Unet/resnet34") as info:
        save_bundle(tmp_path / "b", manifest_fields(), resnet_state)
    assert "missing: " in info.value.message
    assert not (tmp_path / "b").exists()


def test_classifier_needs_its_settings(tmp_path: Path) -> None:
    fields = manifest_fields("classification")
    del fields["classification"]
    with pytest.raises(BundleError, match="'classification' settings are required"):
        save_bundle(tmp_path / "c", fields, build_network(RESNET50, 3, 2).state_dict())


def test_existing_bundle_needs_overwrite(
    tmp_path: Path, unet_state: dict[str, torch.Tensor]
) -> None:
    save_bundle(tmp_path / "b", manifest_fields(), unet_state)
    with pytest.raises(BundleError) as info:
        save_bundle(tmp_path / "b", manifest_fields(), unet_state)
    assert info.value.code == "bundle_exists"
    fields = manifest_fields()
    fields["version"] = "0.2"
    save_bundle(tmp_path / "b", fields, unet_state, overwrite=True)
    assert load_bundle(tmp_path / "b").manifest.version == "0.2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
