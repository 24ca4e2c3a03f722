"""The project's recipe for a real-anatomy liver segmentation bundle from CHAOS-style data, in one
call: ``build_chaos`` (``liver-agent model build-chaos``) trains it with a subject-level held-out
test, ``cross_validate`` (``liver-agent model cv-seg``) measures it by k-fold cross-validation.

A time budget in minutes becomes a fixed number of epochs before training starts
(:func:`epochs_for`), from a measured throughput per device, so the same seed and data give the
same bundle and the same metrics on every run (training never stops on the wall clock).
"""

from __future__ import annotations

import csv
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.bundle import Bundle, Split, load_bundle, save_bundle
from pipeline.inference import resolve_device
from pipeline.training.augment import ORGAN_CONTRAST_FACTOR
from pipeline.training.data import SegCase, load_segmentation_cases, natural_key
from pipeline.training.evaluate import SegEvaluation, evaluate_segmentation
from pipeline.training.loop import TrainConfig
from pipeline.training.seg import train_segmentation
from pipeline.training.split import split_cases

logger = logging.getLogger(__name__)

#: Training slices (forward + backward, at 256 x 256, 2.5D, batch 8) one minute buys, measured:
#: 2-core Xeon (AVX512-BF16), bfloat16: about 70 s an epoch of 10 CHAOS subjects (~330 slices)
#: on a quiet machine (docs/benchmarks.md, v3). CUDA: an estimate for a data-centre GPU, to be
#: replaced by a measurement. Throughput scales with the pixel count for other input sizes.
SLICES_PER_MINUTE_256 = {"cpu": 280.0, "cuda": 12000.0}

CHAOS_LICENCE = "CC BY-NC-SA 4.0 (CHAOS challenge data: research, non-commercial, share-alike)"
CHAOS_CITATION = (
    "A. E. Kavur et al., CHAOS Challenge - combined (CT-MR) healthy abdominal organ "
    "segmentation, Medical Image Analysis 69 (2021) 101950"
)
RESEARCH_USE_ONLY = (
    "RESEARCH USE ONLY; not a medical device. Liver segmentation on axial T2-weighted (SPIR) "
    "MRI, trained on {data}. Data licence: " + CHAOS_LICENCE + "."
)


@dataclass(frozen=True)
class ChaosRecipe:
    """The recipe (docs/benchmarks.md: v3 is 2.5D at 256 x 256, BCE + soft Dice, AdamW, cosine).

    ``bias_field`` adds random smooth shading to the intensity augmentation (off: no gain
    measured in a short cross-validation); ``flip_tta`` makes
    the bundle average the left-right mirrored pass (test-time augmentation); the largest 3D
    component and per-slice hole filling are always applied at inference.
    """

    input_size: int = 256
    context: int = 1
    batch_size: int = 8
    lr: float = 1e-3
    bias_field: bool = False  # measured: no gain (docs/benchmarks.md); kept as an option
    organ_contrast: bool = False
    flip_tta: bool = False
    precision: str = "auto"

    def describe(self) -> dict[str, Any]:
        return {
            "network": "U-Net, ResNet34 encoder",
            "input": f"{self.input_size} x {self.input_size}, 2.5D (slices below, at, above)"
            if self.context
            else f"{self.input_size} x {self.input_size}, one slice",
            "loss": "BCE + soft Dice",
            "optimiser": "AdamW (wd 1e-4), 3% warm-up, cosine decay",
            "lr": self.lr,
            "batch_size": self.batch_size,
            "augmentation": "rotation, scale, shift; gamma, contrast, brightness, noise"
            + (", bias field" if self.bias_field else "")
            + (
                ", organ contrast (liver x {:g}-{:g})".format(*ORGAN_CONTRAST_FACTOR)
                if self.organ_contrast
                else ""
            ),
            "post_processing": "largest 3D component, holes filled per slice"
            + (", left-right flip test-time augmentation" if self.flip_tta else ""),
        }


def device_kind(device: str) -> str:
    """``cpu`` or ``cuda`` for the throughput table (``auto`` resolved here)."""
    return resolve_device(device).type


def epochs_for(minutes: float, train_slices: int, device: str, input_size: int = 256) -> int:
    """The fixed number of epochs a time budget buys: ``minutes`` x slices per minute of the
    device (scaled by pixel count from 256 x 256) / training slices, at least 1.

    Deterministic: the same arguments always give the same count.
    """
    per_minute = SLICES_PER_MINUTE_256[device_kind(device)] * (256.0 / input_size) ** 2
    return max(1, int(minutes * per_minute / max(1, train_slices)))


def _config(
    recipe: ChaosRecipe, epochs: int, device: str, seed: int, imagenet: Path | None, name: str
) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        device=device,
        encoder_weights=imagenet,
        seed=seed,
        batch_size=recipe.batch_size,
        input_size=recipe.input_size,
        lr=recipe.lr,
        name=name,
        version="1",
        precision=recipe.precision,
        context=recipe.context,
        augment=True,
        bias_field=recipe.bias_field,
        organ_contrast=recipe.organ_contrast,
        flip_tta=recipe.flip_tta,
    )


def build_chaos(
    data: Path,
    out: Path,
    *,
    minutes: float = 60.0,
    device: str = "auto",
    seed: int = 0,
    imagenet: Path | None = None,
    recipe: ChaosRecipe = ChaosRecipe(),
    progress: bool = True,
    overwrite: bool = False,
) -> Bundle:
    """Train the recipe on a CHAOS-style folder and write a bundle with a model card.

    Subjects are split 70/15/15 by ``seed`` (15 subjects: 10 train, 2 validation, 3 test); the
    epoch with the best validation Dice is kept; the test subjects give the reported metrics
    (Dice, HD95, mean surface distance, volume error).

    Parameters
    ----------
    data
        Folder of ``image_<N>.nii.gz`` + ``label_<N>.nii.gz`` (liver = 1).
    out
        Bundle folder to write (never inside the repository: the data licence is
        non-commercial share-alike).
    minutes
        Training budget, turned into a fixed epoch count by :func:`epochs_for`.
    device
        ``auto``, ``cpu`` or ``cuda``.
    seed
        Split, initialisation, shuffling and augmentation.
    imagenet
        Local torchvision ResNet34 checkpoint for the encoder (ImageNet); random otherwise.
    """
    started = time.monotonic()
    cases = load_segmentation_cases(data)
    split = split_cases([c.case_id for c in cases], seed)
    train_slices = sum(c.pixels.shape[0] for c in cases if c.case_id in set(split.train))
    epochs = epochs_for(minutes, train_slices, device, recipe.input_size)
    logger.info(
        "build-chaos: %d subjects (%d/%d/%d), %d training slices, %d epochs for %.1f min on %s",
        len(cases),
        len(split.train),
        len(split.val),
        len(split.test),
        train_slices,
        epochs,
        minutes,
        device_kind(device),
    )
    config = _config(recipe, epochs, device, seed, imagenet, "chaos-liver-segmentation")
    description = f"CHAOS T2-SPIR, {len(cases)} subjects from {data.name}"
    bundle = train_segmentation(
        cases,
        out,
        config,
        data_description=description,
        progress=progress,
        overwrite=overwrite,
        split=split,
    )
    by_id = {c.case_id: c for c in cases}
    test = evaluate_segmentation(
        bundle, [by_id[c] for c in split.test], device=device, split="test"
    )
    manifest = bundle.manifest.model_dump(mode="json")
    manifest["intended_use"] = RESEARCH_USE_ONLY.format(data=description)
    summary = test.summary()
    metrics = dict(manifest["training"]["metrics"])
    for name, stats in summary.items():
        metrics[f"test_mean_{name}"] = stats["mean"]
    manifest["training"]["metrics"] = metrics
    manifest["training"]["settings"]["model_card"] = {
        "intended_use": "RESEARCH USE ONLY. Liver outline on axial T2-weighted MRI; not a "
        "medical device, not for diagnosis.",
        "training_subjects": split.train,
        "validation_subjects": split.val,
        "test_subjects": split.test,
        "recipe": recipe.describe(),
        "epochs": epochs,
        "budget_minutes": minutes,
        "device": device_kind(device),
        "seed": seed,
        "encoder_init": "imagenet" if imagenet else "random",
        "test_metrics": test.to_json(),
        "data": description,
        "data_licence": CHAOS_LICENCE,
        "citation": CHAOS_CITATION,
        "wall_minutes": round((time.monotonic() - started) / 60.0, 1),
    }
    return save_bundle(out, manifest, bundle.state_dict, overwrite=True)


def subject_folds(case_ids: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    """``folds`` disjoint groups of subjects covering every subject once (shuffled by ``seed``,
    dealt round-robin, so fold sizes differ by at most one)."""
    if folds < 2 or folds > len(case_ids):
        raise ValueError(f"folds must be between 2 and the number of subjects ({len(case_ids)})")
    ids = sorted(set(case_ids), key=natural_key)
    random.Random(seed).shuffle(ids)  # noqa: S311 (reproducible folds, not a secret)
    return [sorted(ids[k::folds], key=natural_key) for k in range(folds)]


@dataclass(frozen=True)
class CrossValidation:
    """Every subject's metrics as tested by the fold that left it out, per variant of the
    inference (``plain``; ``no_postprocessing``; ``flip_tta``) - the same trained weights."""

    folds: list[list[str]]
    epochs: int
    seed: int
    variants: dict[str, SegEvaluation]
    seconds: float
    recipe: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "folds": self.folds,
            "epochs": self.epochs,
            "seed": self.seed,
            "seconds": round(self.seconds, 1),
            "variants": {name: ev.to_json() for name, ev in self.variants.items()},
        }

    def write(self, folder: Path) -> tuple[Path, Path]:
        """``cv.json`` (everything) and ``cv.csv`` (one row per subject and variant)."""
        folder.mkdir(parents=True, exist_ok=True)
        json_path, csv_path = folder / "cv.json", folder / "cv.csv"
        json_path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        fold_of = {cid: k + 1 for k, fold in enumerate(self.folds) for cid in fold}
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                ["variant", "subject", "fold", "dice", "hd95_mm", "mean_surface_mm",
                 "volume_ml", "label_volume_ml", "volume_error_pct"]
            )  # fmt: skip
            for name, ev in self.variants.items():
                for cid in ev.dice:
                    writer.writerow(
                        [name, cid, fold_of[cid], ev.dice[cid], ev.hd95_mm[cid],
                         ev.mean_surface_mm[cid], ev.volume_ml[cid], ev.label_volume_ml[cid],
                         ev.volume_error_pct[cid]]
                    )  # fmt: skip
        return json_path, csv_path


def cross_validate(
    data: Path,
    work: Path,
    *,
    folds: int = 5,
    minutes_per_fold: float = 10.0,
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    imagenet: Path | None = None,
    recipe: ChaosRecipe = ChaosRecipe(),
    progress: bool = True,
    only_folds: Sequence[int] | None = None,
) -> CrossValidation:
    """Subject-level k-fold cross-validation of the recipe: every subject is tested once, by
    the model trained on the other folds (no validation subject: the last epoch is kept).

    The fold models are written under ``work`` (``fold-<k>/``); each is evaluated as trained
    without test-time augmentation (``plain``), also without the largest-component
    post-processing (``no_postprocessing``), and with left-right flip test-time augmentation
    (``flip_tta``); ``recipe.flip_tta`` is ignored here (both are measured). ``only_folds``
    (1-based) runs those folds alone, for quick comparisons: the folds themselves do not change,
    and the result lists the tested subjects only.
    """
    from pipeline.inference import SegmentationModel
    from pipeline.training.seg_metrics import CaseMetrics, case_metrics

    started = time.monotonic()
    cases = load_segmentation_cases(data)
    by_id = {c.case_id: c for c in cases}
    groups = subject_folds(list(by_id), folds, seed)
    results: dict[str, dict[str, CaseMetrics]] = {
        "plain": {},
        "no_postprocessing": {},
        "flip_tta": {},
    }
    fold_epochs = 0
    if only_folds is not None and not set(only_folds) <= set(range(1, len(groups) + 1)):
        raise ValueError(f"--fold must be between 1 and {len(groups)}")
    for k, test_ids in enumerate(groups, start=1):
        if only_folds is not None and k not in only_folds:
            continue
        train_ids = [c for c in by_id if c not in set(test_ids)]
        train: list[SegCase] = [by_id[c] for c in train_ids]
        slices = sum(c.pixels.shape[0] for c in train)
        fold_epochs = epochs or epochs_for(minutes_per_fold, slices, device, recipe.input_size)
        logger.info("fold %d/%d: test %s, %d epochs", k, folds, ", ".join(test_ids), fold_epochs)
        plain_recipe = replace(recipe, flip_tta=False)
        config = _config(plain_recipe, fold_epochs, device, seed, imagenet, f"chaos-cv-fold-{k}")
        bundle = train_segmentation(
            train,
            work / f"fold-{k}",
            config,
            data_description=f"CHAOS cross-validation fold {k}",
            progress=progress,
            overwrite=True,
            split=Split(train=train_ids, val=[], test=[]),
        )
        fields = bundle.manifest.model_dump(mode="json")
        fields["input"]["flip_tta"] = True
        tta = save_bundle(work / f"fold-{k}-tta", fields, bundle.state_dict, overwrite=True)
        plain_model = SegmentationModel(load_bundle(bundle.path), device=device)
        tta_model = SegmentationModel(tta, device=device)
        for cid in test_ids:
            case = by_id[cid]
            spacing = (case.slice_spacing, case.pixel_spacing[0], case.pixel_spacing[1])
            results["plain"][cid] = case_metrics(
                plain_model.segment(case.pixels), case.mask, spacing
            )
            raw = plain_model.segment(case.pixels, postprocess=False)
            results["no_postprocessing"][cid] = case_metrics(raw, case.mask, spacing)
            results["flip_tta"][cid] = case_metrics(
                tta_model.segment(case.pixels), case.mask, spacing
            )
            logger.info("fold %d subject %s: Dice %.4f", k, cid, results["plain"][cid].dice)
    order = sorted(results["plain"], key=natural_key)
    variants = {
        name: SegEvaluation.from_cases(f"cv-{name}", {cid: per[cid] for cid in order})
        for name, per in results.items()
    }
    return CrossValidation(
        groups, fold_epochs, seed, variants, time.monotonic() - started, recipe.describe()
    )
