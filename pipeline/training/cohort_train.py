"""``train cls --cohort``: the classifier trained on a site's labelled package, 70/15/15 by
patient, with a model card (cohort, counts, split, validation and test metrics) in the bundle.

The training itself is :func:`pipeline.training.cls.train_classification` (the same
liver-masked slice preparation the agent's classifier uses); this module only reads the
package, splits it by patient and writes the card.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bundle import Bundle, Split, save_bundle
from pipeline.training.cls import ClsOptions, train_classification
from pipeline.training.cohort import (
    LabelledCohort,
    check_trainable,
    split_by_patient,
    split_summary,
)
from pipeline.training.evaluate import ClsEvaluation, evaluate_classification
from pipeline.training.loop import TrainConfig

logger = logging.getLogger(__name__)

SPLIT_RULE = "70/15/15 by patient key, stratified by label (a patient with any study labelled 1 "
SPLIT_RULE += "counts as cirrhotic), seeded"


@dataclass(frozen=True)
class CohortPlan:
    """What a cohort training will use, known before it starts (shown to the user)."""

    cohort_name: str
    counts: dict[str, int]
    split: Split
    parts: dict[str, dict[str, int]]


def cohort_name(cohort: LabelledCohort) -> str:
    """The cohort's name from ``cohort.json`` (``name`` or ``cohort``), else the folder name."""
    meta = cohort.folder / "cohort.json"
    if meta.is_file():
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if isinstance(data, dict):
            for key in ("name", "cohort"):
                if isinstance(data.get(key), str) and data[key]:
                    return str(data[key])
    return cohort.folder.resolve().name


def plan_cohort_training(cohort: LabelledCohort, seed: int) -> CohortPlan:
    """Check the class counts and split by patient (raises ``labels_too_few``)."""
    check_trainable(cohort)
    split = split_by_patient(cohort, seed)
    return CohortPlan(
        cohort_name=cohort_name(cohort),
        counts=cohort.counts,
        split=split,
        parts=split_summary(cohort, split),
    )


def _metrics_json(result: ClsEvaluation) -> dict[str, Any]:
    m = result.metrics
    return {
        "n": m.n,
        "accuracy": m.accuracy,
        "sensitivity": m.sensitivity,
        "specificity": m.specificity,
        "auc": m.auc,
        "correct": m.correct,
    }


def train_cohort_classifier(
    cohort: LabelledCohort,
    plan: CohortPlan,
    out: Path,
    config: TrainConfig,
    options: ClsOptions | None = None,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> Bundle:
    """Train on the plan's split and write the bundle with its model card.

    The card (``training.settings.model_card``) holds the cohort's name, the counts of studies
    and patients per class, the split (study UIDs per part, their counts and class balance),
    and accuracy, sensitivity, specificity and AUC on the validation and test parts. Patient
    keys and accession numbers stay out of the bundle.
    """
    options = options or ClsOptions()
    cases = [c.case for c in cohort.cases]
    description = f"cohort {plan.cohort_name}: {len(cases)} labelled studies"
    bundle = train_classification(
        cases,
        out,
        config,
        options,
        data_description=description,
        progress=progress,
        overwrite=overwrite,
        split=plan.split,
    )
    by_id = {c.case_id: c for c in cases}
    device = str(bundle.manifest.training.settings.get("device", "cpu"))
    metrics_by_part: dict[str, Any] = {}
    for part in ("val", "test"):
        ids = getattr(plan.split, part)
        if ids:
            result = evaluate_classification(
                bundle, [by_id[c] for c in ids], device=device, split=part
            )
            metrics_by_part[part] = _metrics_json(result)
    manifest = bundle.manifest.model_dump(mode="json")
    metrics = dict(manifest["training"]["metrics"])
    for part, values in metrics_by_part.items():
        for key in ("accuracy", "sensitivity", "specificity", "auc"):
            if values[key] is not None:
                metrics[f"{part}_{key}"] = values[key]
    manifest["training"]["metrics"] = metrics
    manifest["training"]["settings"]["model_card"] = {
        "intended_use": "RESEARCH USE ONLY. Cirrhosis on the liver-masked caudate-level slice of "
        "axial T2-weighted MRI, trained on one site's labelled studies; validate before use, "
        "not a medical device, not for diagnosis.",
        "cohort": plan.cohort_name,
        "labels_file": cohort.labels_file.name,
        "counts": plan.counts,
        "split_rule": SPLIT_RULE,
        "seed": config.seed,
        "split_counts": plan.parts,
        "readers": cohort.readers,
        "freeze_encoder": config.freeze_encoder,
        "metrics": metrics_by_part,
    }
    return save_bundle(out, manifest, bundle.state_dict, overwrite=True)
