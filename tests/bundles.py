"""Model bundles for tests, written in seconds: untrained but valid segmentation and
classification bundles (real architectures, checksums, manifests) at a small input size."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from pipeline.bundle import Normalisation, save_bundle
from pipeline.networks import RESNET50, UNET_RESNET34, build_network


def _manifest(task: str, name: str, input_size: int, demo: bool = False) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": name,
        "version": "0-test",
        "task": task,
        "network": {
            "architecture": UNET_RESNET34 if task == "segmentation" else RESNET50,
            "in_channels": 3,
            "classes": 1 if task == "segmentation" else 2,
        },
        "input": {
            "size": [input_size, input_size],
            "normalisation": Normalisation(
                scope="slice" if task == "classification" else "volume"
            ).model_dump(),
            "channels": 3,
        },
        "precision": "float32",
        "intended_use": "TESTS ONLY: untrained weights; results mean nothing.",
        "demo": demo,
        "training": {
            "data": "none (untrained)",
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


def write_test_bundles(
    folder: Path,
    *,
    input_size: int = 32,
    seed: int = 0,
    cirrhosis_probability: float = 0.73,
    demo: bool = False,
) -> tuple[Path, Path]:
    """Write ``folder/segmentation`` and ``folder/classification`` bundles with random weights.

    The classifier's head is scaled down and biased so that its probability of cirrhosis stays
    near ``cirrhosis_probability`` whatever the slice (still computed by the real network), so a
    test knows which label to expect. ``demo`` labels both bundles DEMO (they then evaluate only
    the project's phantom studies).

    Returns
    -------
    tuple of Path
        The segmentation and classification bundle folders.
    """
    torch.manual_seed(seed)
    seg_net = build_network(UNET_RESNET34, 3, 1)
    seg = save_bundle(
        folder / "segmentation",
        _manifest("segmentation", "test-segmentation-untrained", input_size, demo),
        seg_net.state_dict(),
        overwrite=True,
    )
    cls_net = build_network(RESNET50, 3, 2)
    state = cls_net.state_dict()
    state["fc.weight"] = state["fc.weight"] * 1e-4
    logit = math.log(cirrhosis_probability / (1.0 - cirrhosis_probability))
    state["fc.bias"] = torch.tensor([0.0, logit])
    cls = save_bundle(
        folder / "classification",
        _manifest("classification", "test-classification-untrained", input_size, demo),
        state,
        overwrite=True,
    )
    return seg.path, cls.path
