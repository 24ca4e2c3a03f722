"""Evaluation of bundles on labelled cases: per-case Dice (segmentation); accuracy,
sensitivity, specificity, AUC and reader comparisons (classification)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

from pipeline.bundle import Bundle
from pipeline.training.data import ClsCase, DataError, SegCase
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
    """Per-case Dice of the segmentation against the labels, and their mean."""

    split: str
    dice: dict[str, float]
    mean_dice: float
    volume_ml: dict[str, float] = field(default_factory=dict)
    label_volume_ml: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
    post-processing included) and compare with the liver labels."""
    from pipeline.inference import SegmentationModel
    from pipeline.training.seg import dice

    model = SegmentationModel(bundle, device=device)
    scores: dict[str, float] = {}
    volumes: dict[str, float] = {}
    label_volumes: dict[str, float] = {}
    for case in cases:
        mask = model.segment(case.pixels)
        scores[case.case_id] = dice(mask, case.mask)
        voxel_ml = case.pixel_spacing[0] * case.pixel_spacing[1] * case.slice_spacing / 1000.0
        volumes[case.case_id] = float(mask.sum()) * voxel_ml
        label_volumes[case.case_id] = float(case.mask.sum()) * voxel_ml
        logger.info("case %s: Dice %.4f", case.case_id, scores[case.case_id])
    mean = float(np.mean(list(scores.values()))) if scores else float("nan")
    return SegEvaluation(split, scores, mean, volumes, label_volumes)


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
