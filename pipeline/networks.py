"""The two networks (U-Net/ResNet34 liver segmentation, ResNet50 cirrhosis classifier) and their
ImageNet initialisation from a local torchvision checkpoint file (nothing is ever downloaded)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import BundleError

logger = logging.getLogger(__name__)

UNET_RESNET34 = "smp.Unet/resnet34"
RESNET50 = "torchvision/resnet50"
ARCHITECTURES = (UNET_RESNET34, RESNET50)


def build_network(architecture: str, in_channels: int, classes: int) -> nn.Module:
    """Build an untrained network.

    Parameters
    ----------
    architecture
        ``"smp.Unet/resnet34"`` (segmentation, one logit per pixel when ``classes == 1``) or
        ``"torchvision/resnet50"`` (classification, ``classes`` logits).
    in_channels
        Input channels: 3 (grey slice repeated, as ImageNet expects) or 1.
    classes
        Output channels (segmentation) or classes (classification).

    Returns
    -------
    torch.nn.Module
        The network with random weights, on the current default device.
    """
    if architecture == UNET_RESNET34:
        import segmentation_models_pytorch as smp

        net: nn.Module = smp.Unet(
            "resnet34", encoder_weights=None, in_channels=in_channels, classes=classes
        )
        return net
    if architecture == RESNET50:
        import torchvision

        net = torchvision.models.resnet50(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        head = net.fc
        assert isinstance(head, nn.Linear)
        net.fc = nn.Linear(head.in_features, classes)
        return net
    raise BundleError(
        "bundle_invalid",
        f"unknown network architecture {architecture!r}; "
        f"expected one of {', '.join(ARCHITECTURES)}",
    )


def encoder_module(net: nn.Module, architecture: str) -> nn.Module:
    """The ImageNet-pretrainable part: the U-Net's encoder, or the whole ResNet50."""
    if architecture == UNET_RESNET34:
        encoder: nn.Module = net.encoder  # type: ignore[assignment]
        return encoder
    return net


def encoder_state_keys(net: nn.Module, architecture: str) -> dict[str, torch.Tensor]:
    """The encoder's state dict in torchvision's key layout (``conv1.weight``, ...; no ``fc``)."""
    state = encoder_module(net, architecture).state_dict()
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def encoder_parameters(net: nn.Module, architecture: str) -> Iterator[nn.Parameter]:
    """Parameters of the encoder (everything but the classifier head for the ResNet50)."""
    for name, param in encoder_module(net, architecture).named_parameters():
        if not name.startswith("fc."):
            yield param


def freeze_encoder(net: nn.Module, architecture: str) -> None:
    """Stop gradients into the encoder. Call :func:`set_train_mode` each epoch too, so that its
    batch-norm statistics stay fixed."""
    for param in encoder_parameters(net, architecture):
        param.requires_grad_(False)


def set_train_mode(net: nn.Module, architecture: str, *, frozen_encoder: bool) -> None:
    """Put the network in training mode; a frozen encoder's batch norms stay in eval mode."""
    net.train()
    if not frozen_encoder:
        return
    encoder = encoder_module(net, architecture)
    for name, module in encoder.named_modules():
        if not name.startswith("fc") and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a torchvision checkpoint (``.pth``/``.pt`` state dict, or ``.safetensors``).

    A dict wrapping the state dict under ``state_dict`` or ``model`` is unwrapped, and a
    ``module.`` prefix (DataParallel) is removed.
    """
    if not path.is_file():
        raise BundleError("encoder_weights_missing", f"encoder weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise BundleError(
            "encoder_weights_invalid",
            f"cannot read encoder weights {path}: {err}; give a torchvision state dict file",
        ) from err
    if isinstance(raw, dict):
        for wrapper in ("state_dict", "model"):
            inner = raw.get(wrapper)
            if isinstance(inner, dict):
                raw = inner
                break
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()
    ):
        raise BundleError(
            "encoder_weights_invalid",
            f"{path} does not hold a state dict (a mapping of parameter names to tensors)",
        )
    return {k.removeprefix("module."): v for k, v in raw.items()}


def load_imagenet_encoder(net: nn.Module, architecture: str, path: Path) -> str:
    """Initialise the encoder from a local torchvision ImageNet checkpoint.

    The file must be a torchvision ``resnet34`` (for the U-Net) or ``resnet50`` state dict
    (keys ``conv1.weight``, ``layer1.0.conv1.weight``, ..., ``fc.*`` ignored). With a
    one-channel network the RGB filters of ``conv1`` are summed.

    Parameters
    ----------
    net
        The network from :func:`build_network`.
    architecture
        Its architecture name.
    path
        The checkpoint file, e.g. ``resnet34-b627a593.pth``.

    Returns
    -------
    str
        The sha256 of the file (recorded in the bundle's training summary).

    Raises
    ------
    BundleError
        ``encoder_weights_mismatch`` naming the missing, unexpected or mismatched keys.
    """
    import hashlib

    source = read_checkpoint(path)
    target = encoder_state_keys(net, architecture)
    source = {k: v for k, v in source.items() if not k.startswith("fc.")}
    conv1 = source.get("conv1.weight")
    wanted_conv1 = target.get("conv1.weight")
    if (
        conv1 is not None
        and wanted_conv1 is not None
        and conv1.ndim == 4
        and conv1.shape[1] == 3
        and wanted_conv1.shape[1] == 1
    ):
        source["conv1.weight"] = conv1.sum(dim=1, keepdim=True)
    _check_keys(source, target, path, architecture)
    with torch.no_grad():
        for key, value in source.items():
            target[key].copy_(value.to(target[key].dtype))
    logger.info("encoder of %s initialised from %s (%d tensors)", architecture, path, len(source))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_keys(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    path: Path,
    architecture: str,
) -> None:
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    mismatched = sorted(
        f"{k} (file {tuple(source[k].shape)}, network {tuple(target[k].shape)})"
        for k in set(source) & set(target)
        if source[k].shape != target[k].shape
    )
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", mismatched)):
        if keys:
            shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")
            problems.append(f"{label} keys: {shown}")
    if problems:
        expected = "resnet34" if architecture == UNET_RESNET34 else "resnet50"
        raise BundleError(
            "encoder_weights_mismatch",
            f"{path} is not a torchvision {expected} state dict ({'; '.join(problems)})",
        )
