"""The shared CHAOS T2-SPIR subjects (CC BY-NC-SA 4.0, outside the repository) for tests on real
anatomy, and a small segmentation bundle trained on them in well under a minute."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.bundle import Split
from pipeline.training.data import load_segmentation_cases
from pipeline.training.loop import TrainConfig
from pipeline.training.seg import train_segmentation

CHAOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "chaos-t2spir"

requires_chaos = pytest.mark.skipif(
    not CHAOS.is_dir(),
    reason=f"CHAOS data not present ({CHAOS}: see ../shared/data/chaos-t2spir/README.md)",
)

#: Trained on 1 and 5; tests use 3 (never seen) and the others.
TINY_TRAIN = ("1", "5")

#: Small and fast (about 30 s of one CPU core), float32 so inference is the same in every process;
#: its prediction is far from perfect (Dice about 0.6 on subject 3) but not empty.
TINY_CONFIG = TrainConfig(
    epochs=4,
    input_size=64,
    batch_size=8,
    lr=3e-3,
    context=1,
    precision="float32",
    device="cpu",
    augment=False,
    name="chaos-tiny-test-segmentation",
    version="0-test",
)


def train_tiny_chaos_bundle(out: Path) -> Path:
    """Train the tiny non-DEMO segmentation bundle on two CHAOS subjects; its folder."""
    cases = load_segmentation_cases(CHAOS, case_ids=list(TINY_TRAIN))
    bundle = train_segmentation(
        cases,
        out,
        TINY_CONFIG,
        data_description="CHAOS T2-SPIR subjects 1 and 5 (tests only)",
        progress=False,
        split=Split(train=list(TINY_TRAIN), val=[], test=[]),
    )
    return bundle.path
