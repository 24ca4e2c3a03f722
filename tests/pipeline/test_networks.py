"""The two networks and their ImageNet initialisation from a local torchvision checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from pipeline.errors import BundleError
from pipeline.networks import (
    RESNET50,
    UNET_RESNET34,
    build_network,
    encoder_module,
    freeze_encoder,
    load_imagenet_encoder,
    set_train_mode,
)


def _torchvision_file(
    tmp_path: Path, arch: str, seed: int = 1
) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    state = getattr(torchvision.models, arch)(weights=None).state_dict()
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
    return path, state


def test_build_networks_shapes() -> None:
    unet = build_network(UNET_RESNET34, 3, 1).eval()
    resnet = build_network(RESNET50, 3, 2).eval()
    with torch.inference_mode():
        assert unet(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
        assert resnet(torch.zeros(2, 3, 64, 64)).shape == (2, 2)


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(BundleError, match="unknown network architecture"):
        build_network("timm/vit", 3, 1)


def test_imagenet_init_of_unet_encoder_from_resnet34_file(tmp_path: Path) -> None:
    path, state = _torchvision_file(tmp_path, "resnet34")
    net = build_network(UNET_RESNET34, 3, 1)
    decoder_before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("decoder")}
    digest = load_imagenet_encoder(net, UNET_RESNET34, path)
    assert len(digest) == 64
    encoder_state = net.encoder.state_dict()
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(encoder_state[key], value), key
    for key, value in decoder_before.items():
        assert torch.equal(net.state_dict()[key], value)


def test_imagenet_init_of_resnet50_keeps_its_head(tmp_path: Path) -> None:
    path, state = _torchvision_file(tmp_path, "resnet50")
    net = build_network(RESNET50, 3, 2)
    head = net.fc.weight.detach().clone()
    load_imagenet_encoder(net, RESNET50, path)
    got = net.state_dict()
    assert torch.equal(got["layer4.2.conv3.weight"], state["layer4.2.conv3.weight"])
    assert torch.equal(got["conv1.weight"], state["conv1.weight"])
    assert torch.equal(net.fc.weight, head)  # 1000-class head of the file is not used


def test_one_channel_network_sums_rgb_filters(tmp_path: Path) -> None:
    path, state = _torchvision_file(tmp_path, "resnet34")
    net = build_network(UNET_RESNET34, 1, 1)
    load_imagenet_encoder(net, UNET_RESNET34, path)
    assert torch.allclose(net.encoder.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))


def test_mismatched_checkpoint_is_refused_naming_keys(tmp_path: Path) -> None:
    path, _ = _torchvision_file(tmp_path, "resnet50")
    net = build_network(UNET_RESNET34, 3, 1)
    before = net.encoder.conv1.weight.detach().clone()
    with pytest.raises(BundleError) as info:
        load_imagenet_encoder(net, UNET_RESNET34, path)
    assert info.value.code == "encoder_weights_mismatch"
    assert "not a torchvision resnet34 state dict" in info.value.message
    assert "layer1.0.conv3.weight" in info.value.message  # resnet50-only key, named
    assert torch.equal(net.encoder.conv1.weight, before)  # nothing half-loaded


def test_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(BundleError, match="does not hold a state dict"):
        load_imagenet_encoder(build_network(RESNET50, 3, 2), RESNET50, path)
    with pytest.raises(BundleError, match="does not exist"):
        load_imagenet_encoder(build_network(RESNET50, 3, 2), RESNET50, tmp_path / "none.pth")


def test_frozen_encoder_batch_norms_stay_in_eval_mode() -> None:
    net = build_network(UNET_RESNET34, 3, 1)
    freeze_encoder(net, UNET_RESNET34)
    set_train_mode(net, UNET_RESNET34, frozen_encoder=True)
    assert not any(p.requires_grad for p in net.encoder.parameters())
    assert all(p.requires_grad for p in net.decoder.parameters())
    assert not net.encoder.bn1.training
    assert net.decoder.training
    resnet = build_network(RESNET50, 3, 2)
    freeze_encoder(resnet, RESNET50)
    set_train_mode(resnet, RESNET50, frozen_encoder=True)
    trainable = [n for n, p in resnet.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    assert encoder_module(resnet, RESNET50) is resnet
