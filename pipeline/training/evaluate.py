"""Evaluation of bundles on labelled cases: per-case Dice, HD95, mean surface distance and
volume error (segmentation); accuracy,
sensitivity, specificity, AUC and reader comparisons (classification)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

from pipeline.bundle import Bundle
from pipeline.training.data import ClsCase, DataError, SegCase
from pipeline.training.seg_metrics import CaseMetrics, case_metrics
from pipeline.training.stats import (
    BinaryMetrics,
    ReaderComparison,
    binary_metrics,
    compare_with_reader,
)

logger = logging.getLogger(__name__)

CaseT = TypeVar("CaseT", SegCase, ClsCase)


@dataclass(frozen=True)
class SegEvaluation:
    """Per-case metrics of the segmentation against the labels (Dice, HD95 and mean surface
    distance in mm, volumes in mL, volume error in %), and the mean Dice."""

    split: str
    dice: dict[str, float]
    mean_dice: float
    volume_ml: dict[str, float] = field(default_factory=dict)
    label_volume_ml: dict[str, float] = field(default_factory=dict)
    hd95_mm: dict[str, float | None] = field(default_factory=dict)
    mean_surface_mm: dict[str, float | None] = field(default_factory=dict)
    volume_error_pct: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def from_cases(cls, split: str, metrics: dict[str, CaseMetrics]) -> SegEvaluation:
        """Collect per-case metrics (in the given order)."""
        dices = {cid: m.dice for cid, m in metrics.items()}
        return cls(
            split=split,
            dice=dices,
            mean_dice=float(np.mean(list(dices.values()))) if dices else float("nan"),
            volume_ml={cid: m.volume_ml for cid, m in metrics.items()},
            label_volume_ml={cid: m.label_volume_ml for cid, m in metrics.items()},
            hd95_mm={cid: m.hd95_mm for cid, m in metrics.items()},
            mean_surface_mm={cid: m.mean_surface_mm for cid, m in metrics.items()},
            volume_error_pct={cid: m.volume_error_pct for cid, m in metrics.items()},
        )

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean, standard deviation, minimum and maximum of each metric over the cases (cases
        where a metric is undefined are left out of it)."""
        out: dict[str, dict[str, float]] = {}
        for name in ("dice", "hd95_mm", "mean_surface_mm", "volume_error_pct"):
            values = [v for v in getattr(self, name).values() if v is not None]
            if values:
                out[name] = {
                    "mean": float(np.mean(values)),
                    "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                    "min": float(np.min(values)),
                    "max": float(np.max(values)),
                }
        return out

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary()
        return data


@dataclass(frozen=True)
class ClsEvaluation:
    """Classification metrics, per-case probabilities and reader comparisons."""

    split: str
    threshold: float
    metrics: BinaryMetrics
    probabilities: dict[str, float]
    labels: dict[str, int]
    readers: list[ReaderComparison] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("metrics"))
        return data


def cases_for_split(bundle: Bundle, all_ids: Sequence[str], split: str) -> list[str]:
    """The case identifiers to evaluate: the bundle's recorded test split, or ``all``."""
    if split == "all":
        return list(all_ids)
    if split not in ("test", "val", "train"):
        raise ValueError(f"split must be test, val, train or all, not {split!r}")
    wanted: list[str] = getattr(bundle.manifest.training.split, split)
    if not wanted:
        raise DataError("data_missing", f"the bundle records no {split} cases; use --split all")
    missing = [c for c in wanted if c not in set(all_ids)]
    if missing:
        raise DataError(
            "data_missing",
            f"{split} cases recorded in the bundle are not in the data folder: "
            f"{', '.join(missing)}",
        )
    return wanted


def evaluate_segmentation(
    bundle: Bundle, cases: Sequence[SegCase], *, device: str = "auto", split: str = "test"
) -> SegEvaluation:
    """Run the segmentation bundle on each case (inference code, original matrix,
    post-processing included) and compare with the liver labels: Dice, HD95 and mean surface
    distance (mm, from the case's voxel spacing), volumes and volume error."""
    from pipeline.inference import SegmentationModel

    model = SegmentationModel(bundle, device=device)
    metrics: dict[str, CaseMetrics] = {}
    for case in cases:
        mask = model.segment(case.pixels)
        spacing = (case.slice_spacing, case.pixel_spacing[0], case.pixel_spacing[1])
        metrics[case.case_id] = case_metrics(mask, case.mask, spacing)
        logger.info("case %s: Dice %.4f", case.case_id, metrics[case.case_id].dice)
    return SegEvaluation.from_cases(split, metrics)


def evaluate_classification(
    bundle: Bundle,
    cases: Sequence[ClsCase],
    *,
    device: str = "auto",
    split: str = "test",
    reader_accuracies: Sequence[float] = (),
    reader_cases: int | None = None,
) -> ClsEvaluation:
    """Classify each case's slice and compute accuracy, sensitivity, specificity and AUC;
    compare the accuracy with each reader's (chi-square test of two proportions)."""
    from pipeline.inference import ClassificationModel

    if not cases:
        raise DataError("data_missing", "no cases to evaluate")
    model = ClassificationModel(bundle, device=device)
    probs: list[float] = []
    for start in range(0, len(cases), 16):
        chunk = cases[start : start + 16]
        values = model.probabilities([c.image for c in chunk], [c.mask for c in chunk])
        probs.extend(float(p) for p in values)
    labels = np.array([c.label for c in cases])
    metrics = binary_metrics(labels, np.array(probs), model.spec.threshold)
    readers = [
        compare_with_reader(metrics.correct, metrics.n, acc, reader_cases or metrics.n)
        for acc in reader_accuracies
    ]
    return ClsEvaluation(
        split=split,
        threshold=model.spec.threshold,
        metrics=metrics,
        probabilities={c.case_id: p for c, p in zip(cases, probs, strict=True)},
        labels={c.case_id: c.label for c in cases},
        readers=readers,
    )
