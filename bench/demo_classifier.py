"""DEMO classifier variants on held-out phantoms, through the DEMO segmentation's own masks.

    .venv/bin/python -m bench.demo_classifier [--seg-model BUNDLE] [VARIANT ...]

A VARIANT is a comma-separated list of DemoSettings fields, e.g. ``cls_input=96`` or
``cls_epochs=16,cls_lr=0.0005``; without any, the shipped settings. For each variant the
classifier is trained as ``liver-agent model build-demo`` trains it (masked by the
segmentation bundle's masks at the pipeline's caudate level), then tested on 24 phantoms
that no DEMO training uses (seeds 90000-90023, vendors cycled, odd seeds cirrhotic) and on
the Siemens phantoms of seeds 1-3 (the studies ``liver-agent demo`` may send).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import fields
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from agent.settings import ModelSettings
from pipeline.bundle import load_bundle
from pipeline.caudate import caudate_index_of_mask
from pipeline.inference import ClassificationModel, SegmentationModel
from pipeline.phantoms import phantom_axial_t2
from pipeline.training.demo import (
    DemoSettings,
    classification_phantoms,
    ensure_demo_bundles,
    train_demo_classifier,
)


def parse_variant(text: str) -> DemoSettings:
    types = {f.name: f.type for f in fields(DemoSettings)}
    values: dict[str, object] = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        values[key] = float(value) if types[key] in (float, "float") else int(value)
    return DemoSettings(**values)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seg-model", type=Path, help="default: the DEMO segmentation bundle")
    parser.add_argument("variants", nargs="*", default=[""])
    args = parser.parse_args()
    seg_path = args.seg_model or ensure_demo_bundles(ModelSettings().cache_dir)[0]
    segment = SegmentationModel(load_bundle(seg_path), device="cpu").segment
    held_out = classification_phantoms(list(range(90000, 90024)), 256, 0, segment)
    demo = []
    for seed in (1, 2, 3):
        for cirrhotic in (True, False):
            vol = phantom_axial_t2(cirrhotic=cirrhotic, seed=seed, matrix=256, vendor="siemens")
            mask = segment(vol.image)
            k = caudate_index_of_mask(mask, vol.pixel_spacing, vol.slice_spacing)
            demo.append((f"{'C' if cirrhotic else 'N'}{seed}", vol.image[k], mask[k]))
    with tempfile.TemporaryDirectory(prefix="demo-cls-") as tmp:
        for i, text in enumerate(args.variants):
            settings = parse_variant(text)
            started = time.monotonic()
            path = train_demo_classifier(
                Path(tmp) / str(i),
                seed=0,
                settings=settings,
                progress=False,
                segmentation=seg_path,
            )
            seconds = time.monotonic() - started
            model = ClassificationModel(load_bundle(path), device="cpu")
            probs = [
                (s, model.predict(c[0].image, c[0].mask).probability)
                for s, c in held_out.items()
                if c
            ]
            accuracy = np.mean([(p >= 0.5) == bool(s % 2) for s, p in probs])
            print(
                f"{text or 'shipped settings'}: trained in {seconds:.0f} s, "
                f"held-out accuracy {accuracy:.2f} ({len(probs)} phantoms)"
            )
            print("  cirrhotic p:", [round(p, 2) for s, p in probs if s % 2])
            print("  normal p:   ", [round(p, 2) for s, p in probs if not s % 2])
            print(
                "  Siemens seeds 1-3:",
                [(name, round(model.predict(im, mk).probability, 2)) for name, im, mk in demo],
            )


if __name__ == "__main__":
    main()
