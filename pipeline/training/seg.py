"""Training of the liver segmentation network (U-Net, ResNet34 encoder) on labelled series."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from pipeline.bundle import Bundle, Normalisation, Split, save_bundle
from pipeline.inference import autocast
from pipeline.networks import UNET_RESNET34, build_network, encoder_module
from pipeline.preprocess import normalise_channels, resize, scale_to_unit, with_context
from pipeline.training.augment import (
    random_affine,
    random_bias_field,
    random_intensity,
    random_organ_contrast,
)
from pipeline.training.data import SegCase, training_distribution
from pipeline.training.evaluate import evaluate_segmentation
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
from pipeline.training.seg_metrics import dice
from pipeline.training.split import split_cases

logger = logging.getLogger(__name__)

SEG_NORMALISATION = Normalisation(scope="volume", low_percentile=0.5, high_percentile=99.5)


def prepare_slices(
    cases: Sequence[SegCase], size: tuple[int, int], norm: Normalisation, context: int = 0
) -> tuple[torch.Tensor, torch.Tensor, list[slice]]:
    """All slices of the cases as 0..1 images (N, 2*context+1, H, W) and masks (N, 1, H, W)
    at the input size, and the range of each case in them."""
    images, masks, ranges = [], [], []
    start = 0
    for case in cases:
        unit = with_context(torch.from_numpy(scale_to_unit(case.pixels, norm)), context)
        images.append(resize(unit, size))
        mask = torch.from_numpy(case.mask.astype(np.float32)).unsqueeze(1)
        masks.append((resize(mask, size) > 0.5).float())
        ranges.append(slice(start, start + unit.shape[0]))
        start += unit.shape[0]
    if not images:
        empty = torch.zeros((0, 1, *size))
        return empty.repeat(1, 2 * context + 1, 1, 1), empty.clone(), ranges
    return torch.cat(images), torch.cat(masks), ranges


def random_crop(
    images: torch.Tensor, masks: torch.Tensor, crop: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random square patch of every image of the batch and of its masks."""
    top = int(torch.randint(0, images.shape[-2] - crop + 1, (1,), generator=gen))
    left = int(torch.randint(0, images.shape[-1] - crop + 1, (1,), generator=gen))
    window = (..., slice(top, top + crop), slice(left, left + crop))
    return images[window], masks[window]


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss over the whole batch (1 - Dice)."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + 1.0) / (prob.sum() + target.sum() + 1.0)


def train_segmentation(
    cases: Sequence[SegCase],
    out: Path,
    config: TrainConfig,
    *,
    data_description: str,
    progress: bool = True,
    overwrite: bool = False,
    split: Split | None = None,
) -> Bundle:
    """Train the U-Net/ResNet34 on labelled series and write a segmentation bundle.

    Cases are split by patient (70/15/15, ``config.seed``); the weights of the epoch with the
    best validation Dice are kept (last epoch when there is no validation case) and tested on
    the test cases with the inference code (original matrix, post-processing).

    Parameters
    ----------
    cases
        Labelled series (:func:`pipeline.training.data.load_segmentation_cases`).
    out
        The bundle folder to write.
    config
        Training settings.
    data_description
        One line for the manifest (what data, where from).
    progress
        Show rich progress bars on stderr.
    overwrite
        Replace an existing bundle.
    split
        Case identifiers of each part, instead of the random 70/15/15 split by seed; cases in
        none of the parts are not used.

    Returns
    -------
    Bundle
        The written bundle.
    """
    gen = seed_everything(config.seed)
    device = training_device(config.device)
    precision = resolve_precision(config.precision, device)
    size = (config.input_size, config.input_size)
    if split is None:
        split = split_cases([c.case_id for c in cases], config.seed)
    by_id = {c.case_id: c for c in cases}
    train_cases = [by_id[c] for c in split.train]
    val_cases = [by_id[c] for c in split.val]
    context = config.context
    images, masks, _ = prepare_slices(train_cases, size, SEG_NORMALISATION, context)
    val_images, val_masks, val_ranges = prepare_slices(val_cases, size, SEG_NORMALISATION, context)

    net = build_network(UNET_RESNET34, 3, 1)
    encoder_note = init_encoder(net, UNET_RESNET34, config)
    net = net.to(device).to(memory_format=torch.channels_last)
    batches = batches_per_epoch(int(images.shape[0]), config.batch_size)
    calib = images[calibration_indices(images.shape[0])]
    optimiser, schedule = make_optimiser(
        net, config.lr, config.epochs * batches, max_minutes=config.max_minutes
    )
    logger.info(
        "training segmentation: %d/%d/%d cases, %d slices, %s, %s",
        len(split.train),
        len(split.val),
        len(split.test),
        images.shape[0],
        device,
        precision,
    )

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        x, y = images[idx], masks[idx]
        if config.augment:
            x, y_aug = random_affine(x, y, gen)
            assert y_aug is not None
            y = y_aug
            if config.organ_contrast:
                x = random_organ_contrast(x, y, gen)
            if config.bias_field:
                x = random_bias_field(x, gen)
            x = random_intensity(x, gen)
        if config.crop_size is not None and config.crop_size < config.input_size:
            x, y = random_crop(x, y, config.crop_size, gen)
        x = normalise_channels(x.to(device), SEG_NORMALISATION, 3)
        x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device)
        with autocast(device, precision):
            logits = net(x)
        logits = logits.float()
        return F.binary_cross_entropy_with_logits(logits, y) + dice_loss(logits, y)

    def validate() -> dict[str, float]:
        dice_ = _validation_dice(
            net, val_images, val_masks, val_ranges, device, precision, config.batch_size
        )
        return {"val_dice": dice_}

    def describe(record: dict[str, float], best_score: float, best_epoch: int) -> str:
        return f"loss {record['train_loss']:.4f}" + (
            f"  val Dice {record['val_dice']:.4f} (best {best_score:.4f} @ {best_epoch})"
            if val_cases
            else ""
        )

    task = EpochTask(
        architecture=UNET_RESNET34,
        items=int(images.shape[0]),
        batch_loss=batch_loss,
        calibration=[
            normalise_channels(b, SEG_NORMALISATION, 3)
            for b in torch.split(calib, config.batch_size)
        ],
        frozen=encoder_module(net, UNET_RESNET34) if config.freeze_encoder else None,
        validate=validate if val_cases else None,
        score="val_dice",
        maximise=True,
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
        title="segmentation",
        progress=progress,
    )
    history, best_state, best_epoch = run.history, run.best_state, run.best_epoch
    best_score, epochs_done, train_seconds = run.best_score, run.epochs_done, run.train_seconds

    metrics: dict[str, float] = {"train_loss_last": history[-1]["train_loss"]}
    if val_cases:
        metrics["val_mean_dice"] = best_score
    fields = _manifest_fields(config, precision, data_description, len(cases), split.model_dump())
    fields["training_distribution"] = training_distribution(train_cases)
    fields["training"].update(
        epochs=epochs_done,
        best_epoch=best_epoch,
        metrics=metrics,
    )
    fields["training"]["settings"].update(
        encoder_init=encoder_note,
        train_seconds=round(train_seconds, 1),
        device=str(device),
        slices_train=int(images.shape[0]),
        history=history,
    )
    if split.test:
        test_cases = [by_id[c] for c in split.test]
        trial = provisional_bundle(fields, best_state, out)
        result = evaluate_segmentation(trial, test_cases, device=str(device))
        metrics["test_mean_dice"] = result.mean_dice
        for cid, value in result.dice.items():
            metrics[f"test_dice_{cid}"] = value
    return save_bundle(out, fields, best_state, overwrite=overwrite)


def _validation_dice(
    net: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    ranges: list[slice],
    device: torch.device,
    precision: str,
    batch_size: int,
) -> float:
    """Mean per-case Dice at the input size (threshold 0.5, no post-processing)."""
    net.eval()
    preds = torch.empty(masks.shape, dtype=torch.bool)
    step = max(batch_size, 16)
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, images.shape[0], step):
            x = normalise_channels(images[start : start + step].to(device), SEG_NORMALISATION, 3)
            logits = net(x.contiguous(memory_format=torch.channels_last))
            preds[start : start + step] = (logits.float() > 0).cpu()
    truth = masks > 0.5
    return float(np.mean([dice(preds[r].numpy(), truth[r].numpy()) for r in ranges]))


def _manifest_fields(
    config: TrainConfig, precision: str, data: str, n_cases: int, split: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": config.name,
        "version": config.version,
        "task": "segmentation",
        "network": {"architecture": UNET_RESNET34, "in_channels": 3, "classes": 1},
        "input": {
            "size": [config.input_size, config.input_size],
            "normalisation": SEG_NORMALISATION.model_dump(mode="json"),
            "channels": 3,
            "context": config.context,
            "flip_tta": config.flip_tta,
        },
        "precision": precision,
        "intended_use": config.intended_use
        or RESEARCH_USE.format(what="Liver segmentation", data=data),
        "demo": config.demo,
        "training": {
            "data": data,
            "cases": n_cases,
            "split": split,
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
                "bias_field": config.bias_field,
                "organ_contrast": config.organ_contrast,
                "crop_size": config.crop_size,
                "context": config.context,
                "loss": "BCE + soft Dice",
                "optimiser": "AdamW wd 1e-4, 3% warm-up, cosine",
                "selection": "best validation Dice (per-case mean, input size)",
                **config.extra,
            },
        },
    }
