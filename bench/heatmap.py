"""Benchmark the heat map against the classification it explains.

On the caudate-level slice of a 256 x 256 phantom, with a ResNet50 classification bundle at the
usual 224 px input (random weights: the cost does not depend on them), in one process: the
classifier's forward pass (``ClassificationModel.predict``) and the Grad-CAM heat map
(``HeatMapper.heat_map``: one forward and one backward pass with hooks, mapped onto the slice),
median of ``--repeats`` after one warm-up each.

    .venv/bin/python -m bench.heatmap --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if "--omp-spin" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from pipeline.bundle import Normalisation, load_bundle, save_bundle
from pipeline.heatmap import HeatMapper
from pipeline.inference import ClassificationModel
from pipeline.networks import RESNET50, build_network
from pipeline.phantoms import phantom_axial_t2


def _bundle(folder: Path, size: int, mode: str) -> Path:
    fields = {
        "name": "bench-classifier",
        "version": "0",
        "task": "classification",
        "network": {"architecture": RESNET50, "in_channels": 3, "classes": 2},
        "input": {
            "size": [size, size],
            "normalisation": Normalisation(scope="mask").model_dump(),
            "channels": 3,
        },
        "classification": {"threshold": 0.5, "mode": mode, "crop_margin": 0.1},
        "precision": "float32",
        "intended_use": "benchmark only",
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
    torch.manual_seed(0)
    return save_bundle(folder / "cls", fields, build_network(RESNET50, 3, 2).state_dict()).path


def _median(fn: object, repeats: int) -> float:
    assert callable(fn)
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--mode", choices=("masked", "whole"), default="masked")
    parser.add_argument("--omp-spin", action="store_true", help="leave OMP_WAIT_POLICY alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    volume = phantom_axial_t2(cirrhotic=True, seed=1, matrix=256)
    image = volume.image[volume.caudate_index]
    mask = volume.liver_mask[volume.caudate_index]
    with tempfile.TemporaryDirectory() as tmp:
        model = ClassificationModel(load_bundle(_bundle(Path(tmp), args.size, args.mode)), "cpu")
        mapper = HeatMapper(model.bundle, model.device)
        classify = _median(lambda: model.predict(image, mask), args.repeats)
        heat = _median(
            lambda: mapper.heat_map(model.input_tensor(image, mask), image.shape, mask),
            args.repeats,
        )
    print(f"input {args.size} px, {args.mode}, layer {mapper.layer}, {args.threads} threads")
    print(f"classify  {classify:.3f} s (median of {args.repeats})")
    print(f"heat map  {heat:.3f} s ({heat / classify:.1f} x the classification)")


if __name__ == "__main__":
    main()
