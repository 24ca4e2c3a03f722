"""What both trainers share: settings, seeding, precision, optimiser and schedule, encoder
initialisation and freezing, the epoch loop (:func:`run_epochs`) and the provisional bundle used
to test the chosen weights."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.bundle import WEIGHTS, Bundle, Manifest
from pipeline.errors import BundleError
from pipeline.inference import bf16_supported, resolve_device
from pipeline.networks import freeze_encoder, load_imagenet_encoder, set_train_mode
from pipeline.training.progress import TrainProgress

logger = logging.getLogger(__name__)

RESEARCH_USE = (
    "Research use only; not a medical device. {what} on axial T2-weighted liver MRI, "
    "trained on {data}."
)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings shared by both networks (defaults suit the segmentation network)."""

    epochs: int = 30
    device: str = "auto"
    encoder_weights: Path | None = None
    freeze_encoder: bool = False
    seed: int = 0
    batch_size: int = 8
    input_size: int = 256
    lr: float = 1e-3
    name: str = "liver-segmentation"
    version: str = "1"
    precision: str = "auto"  # auto: bfloat16 where the device supports it, else float32
    max_minutes: float | None = None  # stop after the epoch that passes this much wall time
    crop_size: int | None = None  # segmentation: train on random crops of the input (patches)
    init_from: Path | None = None  # continue from this bundle's weights (same architecture)
    context: int = 0  # segmentation: neighbouring slices as channels (2.5D)
    augment: bool = True
    bias_field: bool = False  # segmentation: random smooth intensity shading (MR bias field)
    organ_contrast: bool = False  # segmentation: random brightness of the labelled organ alone
    flip_tta: bool = False  # segmentation: the bundle averages the left-right flipped pass
    demo: bool = False
    intended_use: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch generator for shuffling/augmentation."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bfloat16`` where supported, else ``float32``."""
    if precision == "auto":
        return "bfloat16" if bf16_supported(device) else "float32"
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be auto, float32 or bfloat16, not {precision!r}")
    return precision


def training_device(name: str) -> torch.device:
    return resolve_device(name)


def init_encoder(net: nn.Module, architecture: str, config: TrainConfig) -> str:
    """Initialise from a bundle (``init_from``) or the encoder from a local ImageNet file, and
    freeze the encoder if asked; returns a note for the manifest (``random``,
    ``imagenet:<file name> sha256:<hash>`` or ``bundle:<name> <version> sha256:<hash>``)."""
    note = "random"
    if config.init_from is not None:
        from pipeline.bundle import load_bundle

        start = load_bundle(config.init_from)
        if start.manifest.network.architecture != architecture:
            raise BundleError(
                "bundle_wrong_task",
                f"{config.init_from} holds a {start.manifest.network.architecture} network, "
                f"not {architecture}",
            )
        net.load_state_dict(start.state_dict)
        note = f"bundle:{start.manifest.name} {start.manifest.version} sha256:{start.info.sha256}"
    elif config.encoder_weights is not None:
        digest = load_imagenet_encoder(net, architecture, config.encoder_weights)
        note = f"imagenet:{config.encoder_weights.name} sha256:{digest}"
    if config.freeze_encoder:
        if config.encoder_weights is None:
            logger.warning("freezing a randomly initialised encoder: only the head learns")
        freeze_encoder(net, architecture)
    return note


def make_optimiser(
    net: nn.Module, lr: float, total_steps: int, *, max_minutes: float | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW on the trainable parameters, linear warm-up (3 %) then cosine decay to 2 % of lr.

    With ``max_minutes`` the decay follows whichever runs out first, steps or time, so that a
    run stopped by its time budget still ends at a low learning rate.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    warmup = max(1, int(0.03 * total_steps))
    started = time.monotonic()

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if max_minutes is not None:
            t = max(t, min(1.0, (time.monotonic() - started) / (60.0 * max_minutes)))
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t))

    return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def clone_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the network's state dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def provisional_bundle(fields: dict[str, Any], state: dict[str, torch.Tensor], out: Path) -> Bundle:
    """A bundle held in memory (weights not yet written) to evaluate the chosen weights."""
    manifest = Manifest.model_validate(
        {
            **fields,
            "format": "liver-agent-bundle/1",
            "created": "",
            "code_version": "",
            "weights": {WEIGHTS: "provisional"},
        }
    )
    return Bundle(path=out, manifest=manifest, state_dict=state)


def recalibrate_batch_norm(
    net: nn.Module,
    batches: list[torch.Tensor],
    *,
    frozen: nn.Module | None,
    device: torch.device,
    precision: str,
) -> None:
    """Re-estimate the batch-norm running statistics from un-augmented training batches.

    Short trainings leave running statistics far from the batch statistics the weights were
    trained with (momentum 0.1 from mean 0 / variance 1); the cumulative average over the
    given batches fixes that for validation and the saved bundle. A frozen encoder's batch
    norms are left alone.
    """
    from pipeline.inference import autocast

    skip = {id(m) for m in frozen.modules()} if frozen is not None else set()
    norms = [
        m
        for m in net.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in skip
    ]
    if not norms or not batches:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
        m.train()
    with torch.no_grad(), autocast(device, precision):
        for batch in batches:
            net(batch.to(device).contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def calibration_indices(count: int, limit: int = 64) -> torch.Tensor:
    """Evenly spaced sample indices (at most ``limit``) for :func:`recalibrate_batch_norm`."""
    if count <= limit:
        return torch.arange(count)
    return torch.linspace(0, count - 1, limit).round().long()


def batches_per_epoch(items: int, batch_size: int) -> int:
    """How many batches one epoch of ``items`` makes (the last one may be short)."""
    return max(1, -(-items // batch_size))


@dataclass
class EpochTask:
    """What one network brings to the shared epoch loop (:func:`run_epochs`).

    Attributes
    ----------
    architecture
        The network's architecture name (for train mode and encoder freezing).
    items
        How many training items (slices or images) one epoch shuffles and batches.
    batch_loss
        Indices of one batch -> the loss of its forward pass (augmentation, normalisation and
        the forward pass included; the loop does the backward pass and the optimiser step).
    calibration
        Normalised batches on which batch-norm statistics are re-estimated after each epoch.
    frozen
        The frozen part of the network whose statistics stay as they are, if any.
    validate
        The validation figures of the current weights (``None``: no validation cases, the last
        epoch is kept).
    score
        The key of ``validate``'s figures that chooses the kept epoch.
    maximise
        Whether a higher score is better (Dice) or a lower one (loss).
    describe
        One line for the progress bar and the log: (record, best score, best epoch) -> text.
    """

    architecture: str
    items: int
    batch_loss: Callable[[torch.Tensor], torch.Tensor]
    calibration: list[torch.Tensor]
    frozen: nn.Module | None
    validate: Callable[[], dict[str, float]] | None
    score: str
    maximise: bool
    describe: Callable[[dict[str, float], float, int], str]


@dataclass(frozen=True)
class EpochsResult:
    """What the epoch loop leaves: the kept weights and the history of every epoch."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    epochs_done: int
    train_seconds: float


def run_epochs(
    net: nn.Module,
    task: EpochTask,
    config: TrainConfig,
    *,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
    device: torch.device,
    precision: str,
    title: str,
    progress: bool,
) -> EpochsResult:
    """The epoch loop both trainers share.

    Each epoch shuffles the items with ``gen``, steps the optimiser and schedule once per batch,
    re-estimates batch-norm statistics, validates and keeps the best weights (the last epoch
    when there is no validation); it stops early after the epoch whose projected end passes
    ``config.max_minutes``.

    Parameters
    ----------
    net
        The network being trained (already on ``device``).
    task
        What the network brings: its batch loss, validation and score.
    config
        Training settings (epochs, batch size, encoder freezing, time budget).
    optimiser, schedule
        From :func:`make_optimiser`.
    gen
        The seeded generator (:func:`seed_everything`); shuffling draws from it.
    device, precision
        Where and how the network runs.
    title
        The progress bar's title.
    progress
        Show rich progress bars on stderr.

    Returns
    -------
    EpochsResult
        The kept weights, their epoch and score, and the history.
    """
    batches = batches_per_epoch(task.items, config.batch_size)
    best_state, best_epoch = clone_state(net), 0
    best_score = -math.inf if task.maximise else math.inf
    history: list[dict[str, float]] = []
    started = time.monotonic()
    epochs_done = 0
    with TrainProgress(config.epochs, enabled=progress, title=title) as bar:
        for epoch in range(1, config.epochs + 1):
            set_train_mode(net, task.architecture, frozen_encoder=config.freeze_encoder)
            order = torch.randperm(task.items, generator=gen)
            bar.start_epoch(epoch, batches)
            losses = []
            for b in range(batches):
                loss = task.batch_loss(order[b * config.batch_size : (b + 1) * config.batch_size])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
                schedule.step()
                value = float(loss.detach())
                losses.append(value)
                bar.batch(value)
            epochs_done = epoch
            recalibrate_batch_norm(
                net, task.calibration, frozen=task.frozen, device=device, precision=precision
            )
            record = {"epoch": float(epoch), "train_loss": float(np.mean(losses))}
            if task.validate is not None:
                record.update(task.validate())
                score = record[task.score]
            else:
                score = float(epoch) if task.maximise else -float(epoch)  # keep the last epoch
            history.append(record)
            if (score > best_score) if task.maximise else (score < best_score):
                best_state, best_epoch, best_score = clone_state(net), epoch, score
            info = task.describe(record, best_score, best_epoch)
            bar.end_epoch(info)
            logger.info("epoch %d: %s", epoch, info)
            elapsed = (time.monotonic() - started) / 60.0
            if (
                config.max_minutes is not None
                and elapsed * (epoch + 1) / epoch > config.max_minutes
            ):
                bar.log(f"stopping after epoch {epoch}: time budget {config.max_minutes} min")
                break
    return EpochsResult(
        best_state=best_state,
        best_epoch=best_epoch,
        best_score=best_score,
        history=history,
        epochs_done=epochs_done,
        train_seconds=time.monotonic() - started,
    )
