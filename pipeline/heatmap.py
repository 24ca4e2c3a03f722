"""Where the cirrhosis classifier looked: a Grad-CAM heat map (Selvaraju et al., ICCV 2017) of
the ResNet50 on the caudate-level slice, from MONAI's ``monai.visualize.GradCAM`` (MONAI is a
dependency already; its hooks are the well-kept implementation), mapped back from the network
input onto the slice's own pixels."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from pipeline.bundle import Bundle
from pipeline.preprocess import liver_box

FloatArray = npt.NDArray[np.float32]

#: ResNet50 stages and their stride; the heat map uses the deepest whose feature map is at
#: least :data:`MIN_FEATURE_SIDE` pixels (layer4 at the usual 224 px input: 7 x 7).
RESNET_STAGES = (("layer4", 32), ("layer3", 16), ("layer2", 8), ("layer1", 4))
MIN_FEATURE_SIDE = 6
CLASS_NAMES = ("no cirrhosis", "cirrhosis")
METHOD = "Grad-CAM (monai.visualize.GradCAM)"


@dataclass(frozen=True, eq=False)
class HeatMap:
    """A class-activation map on the slice.

    ``cam`` has the slice's shape (rows, columns), 0..1 (1 = strongest evidence), zero where
    the network saw nothing (outside the liver crop in masked mode). ``share_in_liver`` is
    the fraction of the map's total inside the liver mask (None without a mask).
    """

    cam: FloatArray
    layer: str
    class_index: int
    share_in_liver: float | None
    method: str = METHOD

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.class_index] if self.class_index < len(CLASS_NAMES) else "?"

    def to_json(self) -> dict[str, object]:
        return {
            "method": self.method,
            "layer": self.layer,
            "class": self.class_name,
            "share_in_liver": None
            if self.share_in_liver is None
            else round(self.share_in_liver, 4),
        }


def target_layer(input_size: tuple[int, int]) -> str:
    """The deepest ResNet50 stage whose feature map is at least :data:`MIN_FEATURE_SIDE` px."""
    side = min(input_size)
    for name, stride in RESNET_STAGES:
        if side // stride >= MIN_FEATURE_SIDE:
            return name
    return RESNET_STAGES[-1][0]


def share_inside(cam: FloatArray, mask: npt.NDArray[np.bool_] | None) -> float | None:
    """The fraction of the map's total that lies inside ``mask``."""
    if mask is None:
        return None
    total = float(cam.sum())
    return float(cam[mask].sum()) / total if total > 0 else 0.0


class HeatMapper:
    """Grad-CAM of a classification bundle's network (a copy of its own, with hooks; one map at
    a time, so several workers may share it).

    Parameters
    ----------
    bundle
        The classification bundle (ResNet50).
    device
        The torch device of the classifier.
    """

    def __init__(self, bundle: Bundle, device: torch.device) -> None:
        from monai.visualize.class_activation_maps import GradCAM

        manifest = bundle.manifest
        if manifest.task != "classification" or manifest.classification is None:
            raise ValueError(f"bundle {manifest.name} is not a classifier")
        self.spec = manifest.classification
        self.size = (manifest.input.size[0], manifest.input.size[1])
        self.layer = target_layer(self.size)
        network = bundle.build().to(device)
        for parameter in network.parameters():
            parameter.requires_grad_(False)  # gradients to the activations only
        self._cam = GradCAM(network, target_layers=self.layer, postprocessing=lambda x: x)
        self._lock = threading.Lock()

    def heat_map(
        self,
        network_input: torch.Tensor,
        image_shape: tuple[int, int],
        mask: npt.NDArray[np.bool_] | None,
    ) -> HeatMap:
        """The heat map of one prepared input (1, channels, H, W), on the slice's grid.

        Parameters
        ----------
        network_input
            What the classifier was given
            (:meth:`pipeline.inference.ClassificationModel.input_tensor`).
        image_shape
            The slice's (rows, columns).
        mask
            The liver mask of the slice (masked mode: where the crop was taken; also the
            mask the share is measured in).
        """
        x = network_input.detach().clone().float().requires_grad_(True)
        with self._lock, torch.enable_grad():
            raw = self._cam(x)  # (1, 1, H, W) at input resolution, for the predicted class
            chosen: Any = self._cam.nn_module.class_idx  # argmax of the logits, a tensor
            class_index = int(chosen)
        cam = raw.detach().float().cpu()
        if self.spec.mode == "masked" and mask is not None and mask.any():
            r0, r1, c0, c1 = liver_box(mask, self.spec.crop_margin)
            crop = F.interpolate(cam, size=(r1 - r0, c1 - c0), mode="bilinear")[0, 0].numpy()
            full = np.zeros(image_shape, dtype=np.float32)
            sr0, sr1 = max(r0, 0), min(r1, image_shape[0])
            sc0, sc1 = max(c0, 0), min(c1, image_shape[1])
            full[sr0:sr1, sc0:sc1] = crop[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0]
        else:
            full = F.interpolate(cam, size=image_shape, mode="bilinear")[0, 0].numpy()
        full = np.clip(full, 0, None).astype(np.float32)
        peak = float(full.max())
        if peak > 0:
            full /= peak
        return HeatMap(full, self.layer, class_index, share_inside(full, mask))


__all__ = ["HeatMap", "HeatMapper", "share_inside", "target_layer"]
