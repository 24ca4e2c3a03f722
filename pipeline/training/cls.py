"""Training of the cirrhosis classifier (ResNet50) on labelled caudate-level slices."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from pipeline.bundle import Bundle, Normalisation, Split, save_bundle
from pipeline.inference import autocast
from pipeline.networks import RESNET50, build_network
from pipeline.preprocess import classification_unit_image, normalise_channels, resize
from pipeline.training.augment import random_affine, random_intensity
from pipeline.training.data import ClsCase, DataError, training_distribution
from pipeline.training.evaluate import evaluate_classification
from pipeline.training.loop import (
    RESEARCH_USE,
    EpochTask,
    TrainConfig,
    batches_per_epoch,
    calibration_indices,
    init_encoder,
    make_optimiser,
    provisional_bundle,
    resolve_precision,
    run_epochs,
    seed_everything,
    training_device,
)
from pipeline.training.split import split_cases

logger = logging.getLogger(__name__)

CLS_DEFAULTS = TrainConfig(
    epochs=30, batch_size=16, input_size=224, lr=1e-3, name="liver-cirrhosis"
)


@dataclass(frozen=True)
class ClsOptions:
    """How the classifier's slice is prepared and read."""

    mode: str = "masked"  # masked: liver-masked crop (upstream segmentation); whole: slice
    crop_margin: float = 0.1
    threshold: float = 0.5


def normalisation_for(mode: str) -> Normalisation:
    """Percentiles over the liver pixels (masked mode) or the whole slice."""
    return Normalisation(scope="mask" if mode == "masked" else "slice")


def prepare_images(
    cases: Sequence[ClsCase], options: ClsOptions, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cases' 0..1 classifier images at the input size (N, 1, H, W) and their labels."""
    norm = normalisation_for(options.mode)
    images = []
    for case in cases:
        if options.mode == "masked" and not case.mask.any():
            raise DataError("data_layout", f"case {case.case_id}: the liver mask is empty")
        unit = classification_unit_image(
            case.image, case.mask, norm, mode=options.mode, margin=options.crop_margin
        )
        images.append(resize(torch.from_numpy(unit)[None, None], size))
    labels = torch.tensor([c.label for c in cases], dtype=torch.long)
    if not images:
        return torch.zeros((0, 1, *size)), labels
    return torch.cat(images), labels


def train_classification(
    cases: Sequence[ClsCase],
    out: Path,
    config: TrainConfig,
    options: ClsOptions | None = None,
    *,
    data_description: str,
    progress: bool = True,
    overwrite: bool = False,
    split: Split | None = None,
) -> Bundle:
    """Train the ResNet50 on labelled slices and write a classification bundle.

    Split 70/15/15 by case with ``config.seed``; the epoch with the lowest validation loss is
    kept (last epoch without validation cases) and tested on the test cases.

    Parameters
    ----------
    cases
        Labelled slices with liver masks (:func:`pipeline.training.data.load_classification_cases`).
    out
        The bundle folder to write.
    config
        Training settings (:data:`CLS_DEFAULTS` are the defaults for this network).
    options
        Masked or whole-slice mode, crop margin and threshold.
    data_description
        One line for the manifest.
    progress
        Show rich progress bars on stderr.
    overwrite
        Replace an existing bundle.
    split
        Case identifiers of each part, instead of the random 70/15/15 split by seed; cases in
        none of the parts are not used.
    """
    options = options or ClsOptions()
    gen = seed_everything(config.seed)
    device = training_device(config.device)
    precision = resolve_precision(config.precision, device)
    size = (config.input_size, config.input_size)
    if split is None:
        split = split_cases([c.case_id for c in cases], config.seed)
    by_id = {c.case_id: c for c in cases}
    images, labels = prepare_images([by_id[c] for c in split.train], options, size)
    val_images, val_labels = prepare_images([by_id[c] for c in split.val], options, size)
    norm = normalisation_for(options.mode)

    net = build_network(RESNET50, 3, 2)
    encoder_note = init_encoder(net, RESNET50, config)
    net = net.to(device).to(memory_format=torch.channels_last)
    batches = batches_per_epoch(int(images.shape[0]), config.batch_size)
    calib = images[calibration_indices(images.shape[0])]
    optimiser, schedule = make_optimiser(
        net, config.lr, config.epochs * batches, max_minutes=config.max_minutes
    )

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        x = _augment(images[idx], gen, options.mode) if config.augment else images[idx]
        x = normalise_channels(x.to(device), norm, 3)
        with autocast(device, precision):
            logits = net(x.contiguous(memory_format=torch.channels_last))
        return F.cross_entropy(logits.float(), labels[idx].to(device))

    def validate() -> dict[str, float]:
        val_loss, val_acc = _validate(net, val_images, val_labels, norm, device, precision)
        return {"val_loss": val_loss, "val_accuracy": val_acc}

    def describe(record: dict[str, float], best_score: float, best_epoch: int) -> str:
        return f"loss {record['train_loss']:.4f}" + (
            f"  val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.3f}"
            f" (best @ {best_epoch})"
            if len(val_labels)
            else ""
        )

    task = EpochTask(
        architecture=RESNET50,
        items=int(images.shape[0]),
        batch_loss=batch_loss,
        calibration=[normalise_channels(b, norm, 3) for b in torch.split(calib, config.batch_size)],
        frozen=net if config.freeze_encoder else None,
        validate=validate if len(val_labels) else None,
        score="val_loss",
        maximise=False,
        describe=describe,
    )
    run = run_epochs(
        net,
        task,
        config,
        optimiser=optimiser,
        schedule=schedule,
        gen=gen,
        device=device,
        precision=precision,
        title="classification",
        progress=progress,
    )
    history, best_state, best_epoch = run.history, run.best_state, run.best_epoch
    epochs_done, train_seconds = run.epochs_done, run.train_seconds

    metrics: dict[str, float] = {"train_loss_last": history[-1]["train_loss"]}
    if len(val_labels):
        best = history[best_epoch - 1]
        metrics.update(val_loss=best["val_loss"], val_accuracy=best["val_accuracy"])
    fields = _manifest_fields(config, options, precision, data_description, len(cases))
    fields["training_distribution"] = training_distribution([by_id[c] for c in split.train])
    fields["training"].update(
        split=split.model_dump(), epochs=epochs_done, best_epoch=best_epoch, metrics=metrics
    )
    fields["training"]["settings"].update(
        encoder_init=encoder_note,
        train_seconds=round(train_seconds, 1),
        device=str(device),
        history=history,
    )
    if split.test:
        trial = provisional_bundle(fields, best_state, out)
        result = evaluate_classification(trial, [by_id[c] for c in split.test], device=str(device))
        m = result.metrics
        metrics["test_accuracy"] = m.accuracy
        optional: tuple[tuple[str, float | None], ...] = (
            ("sensitivity", m.sensitivity),
            ("specificity", m.specificity),
            ("auc", m.auc),
        )
        for key, maybe in optional:
            if maybe is not None:
                metrics[f"test_{key}"] = maybe
    return save_bundle(out, fields, best_state, overwrite=overwrite)


def _augment(x: torch.Tensor, gen: torch.Generator, mode: str) -> torch.Tensor:
    warped, _ = random_affine(x, None, gen)
    out = random_intensity(warped, gen)
    if mode == "masked":
        out = out * (warped > 0)  # outside the liver stays zero
    return out


def _validate(
    net: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: Normalisation,
    device: torch.device,
    precision: str,
) -> tuple[float, float]:
    net.eval()
    logits = []
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, images.shape[0], 32):
            x = normalise_channels(images[start : start + 32].to(device), norm, 3)
            logits.append(net(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    out = torch.cat(logits)
    loss = float(F.cross_entropy(out, labels))
    accuracy = float((out.argmax(1) == labels).float().mean())
    return loss, accuracy


def _manifest_fields(
    config: TrainConfig, options: ClsOptions, precision: str, data: str, n_cases: int
) -> dict[str, Any]:
    return {
        "name": config.name,
        "version": config.version,
        "task": "classification",
        "network": {"architecture": RESNET50, "in_channels": 3, "classes": 2},
        "input": {
            "size": [config.input_size, config.input_size],
            "normalisation": normalisation_for(options.mode).model_dump(mode="json"),
            "channels": 3,
        },
        "classification": {
            "threshold": options.threshold,
            "mode": options.mode,
            "crop_margin": options.crop_margin,
        },
        "precision": precision,
        "intended_use": config.intended_use
        or RESEARCH_USE.format(
            what="Cirrhosis classification of the caudate-level slice", data=data
        ),
        "demo": config.demo,
        "training": {
            "data": data,
            "cases": n_cases,
            "split": {"train": [], "val": [], "test": []},
            "seed": config.seed,
            "epochs": config.epochs,
            "best_epoch": 0,
            "metrics": {},
            "settings": {
                "input_size": config.input_size,
                "batch_size": config.batch_size,
                "lr": config.lr,
                "epochs_requested": config.epochs,
                "freeze_encoder": config.freeze_encoder,
                "augment": config.augment,
                "loss": "cross-entropy",
                "optimiser": "AdamW wd 1e-4, 3% warm-up, cosine",
                "selection": "lowest validation loss",
                **config.extra,
            },
        },
    }
