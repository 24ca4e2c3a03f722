"""Model bundles: a folder with ``manifest.json`` and ``weights.safetensors``, checked on load
(manifest fields, sha256 of every weights file, state-dict keys against the architecture)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import BundleError
from pipeline.input_distribution import TrainingDistribution
from pipeline.networks import ARCHITECTURES, build_network
from pipeline.results import ModelInfo

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "liver-agent-bundle/1"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkSpec(_Strict):
    """Which network the weights belong to."""

    architecture: str
    in_channels: int = Field(ge=1, le=3)
    classes: int = Field(ge=1)

    @model_validator(mode="after")
    def _known(self) -> NetworkSpec:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}")
        return self


class Normalisation(_Strict):
    """Intensity normalisation: clip to percentiles, scale to 0..1, then per-channel mean/std.

    ``scope`` says over which pixels the percentiles are taken: the whole series
    (``volume``), the slice (``slice``) or the liver pixels of the slice (``mask``).
    """

    method: Literal["percentile"] = "percentile"
    scope: Literal["volume", "slice", "mask"] = "volume"
    low_percentile: float = Field(default=0.5, ge=0, lt=100)
    high_percentile: float = Field(default=99.5, gt=0, le=100)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


class InputSpec(_Strict):
    """What the network sees: size (rows, columns), normalisation, channels."""

    size: tuple[int, int]
    normalisation: Normalisation
    channels: int = Field(default=3, ge=1, le=3, description="grey slice repeated this often")
    context: int = Field(
        default=0,
        ge=0,
        le=1,
        description="segmentation: 0 = the slice in every channel; 1 = channels are the slices "
        "below, at and above (2.5D, edge slices repeated)",
    )
    flip_tta: bool = Field(
        default=False,
        description="segmentation: test-time augmentation, the mean of the logits of the slice "
        "and of its left-right mirror image (mirrored back)",
    )


class ClassificationSpec(_Strict):
    """How a classifier's slice is prepared and its probability read."""

    threshold: float = Field(ge=0, le=1)
    mode: Literal["masked", "whole"]
    crop_margin: float = Field(
        default=0.1, ge=0, le=1, description="margin around the liver box, fraction of its side"
    )


class Split(_Strict):
    """Case identifiers of each part of the split (by patient)."""

    train: list[str]
    val: list[str]
    test: list[str]


class TrainingSummary(_Strict):
    """How the weights were made."""

    data: str
    cases: int
    split: Split
    seed: int
    epochs: int
    best_epoch: int
    metrics: dict[str, float]
    settings: dict[str, Any] = Field(default_factory=dict)


class Manifest(_Strict):
    """``manifest.json`` of a bundle (format ``liver-agent-bundle/1``)."""

    format: Literal["liver-agent-bundle/1"]
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    task: Literal["segmentation", "classification"]
    network: NetworkSpec
    input: InputSpec
    classification: ClassificationSpec | None = None
    precision: Literal["float32", "bfloat16"]
    intended_use: str
    demo: bool
    training: TrainingSummary
    created: str
    code_version: str
    weights: dict[str, str]
    training_distribution: TrainingDistribution | None = Field(
        default=None,
        description="acquisitions of the training data (manufacturer, field strength, TE, TR, "
        "pixel spacing, matrix); None in bundles made before it was recorded",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if (self.task == "classification") != (self.classification is not None):
            raise ValueError("'classification' settings are required for (only) a classifier")
        if self.input.channels != self.network.in_channels:
            raise ValueError("input.channels must equal network.in_channels")
        if self.input.context and self.input.channels != 2 * self.input.context + 1:
            raise ValueError("input.context 1 needs input.channels 3 (below, at, above)")
        norm = self.input.normalisation
        if len(norm.mean) != self.input.channels or len(norm.std) != self.input.channels:
            raise ValueError("normalisation mean/std need one value per input channel")
        return self


@dataclass(frozen=True, eq=False)
class Bundle:
    """A loaded, verified bundle: its folder, manifest and weights (CPU tensors)."""

    path: Path
    manifest: Manifest
    state_dict: dict[str, torch.Tensor]

    @property
    def info(self) -> ModelInfo:
        """What outputs must say about this model."""
        m = self.manifest
        return ModelInfo(
            name=m.name,
            version=m.version,
            task=m.task,
            architecture=m.network.architecture,
            demo=m.demo,
            sha256=m.weights[WEIGHTS],
        )

    def build(self) -> torch.nn.Module:
        """The network with the bundle's weights, in eval mode, on the CPU."""
        net_spec = self.manifest.network
        with torch.device("meta"):
            net = build_network(net_spec.architecture, net_spec.in_channels, net_spec.classes)
        net.load_state_dict(self.state_dict, strict=True, assign=True)
        return net.eval()


def sha256_of(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def _field_message(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"])
        if item["type"] == "missing":
            parts.append(f"field '{where}' is missing")
        elif item["type"] == "extra_forbidden":
            parts.append(f"field '{where}' is not allowed")
        else:
            parts.append(f"field '{where or '(manifest)'}': {item['msg']}")
    return "; ".join(parts)


def read_manifest(path: Path) -> Manifest:
    """Read and validate ``manifest.json`` of the bundle folder ``path``.

    Raises
    ------
    BundleError
        ``bundle_missing`` (no folder or manifest) or ``bundle_invalid`` naming the field.
    """
    if not path.is_dir():
        raise BundleError("bundle_missing", f"model bundle folder {path} does not exist")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError("bundle_missing", f"{manifest_path} is missing: not a model bundle")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError("bundle_invalid", f"{MANIFEST}: not valid JSON ({err})") from err
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        raise BundleError(
            "bundle_invalid", f"{MANIFEST}: {_field_message(err)} (bundle {path})"
        ) from err


def load_bundle(path: Path | str) -> Bundle:
    """Load a bundle and verify it.

    Parameters
    ----------
    path
        The bundle folder.

    Returns
    -------
    Bundle
        Manifest and weights; ``bundle.build()`` makes the network.

    Raises
    ------
    BundleError
        ``bundle_missing``, ``bundle_invalid`` (manifest field or weights keys, named),
        ``bundle_checksum`` (a weights file does not match its sha256 in the manifest).
    """
    from safetensors.torch import load as load_safetensors

    path = Path(path)
    manifest = read_manifest(path)
    if WEIGHTS not in manifest.weights:
        raise BundleError("bundle_invalid", f"{MANIFEST}: field 'weights' lacks {WEIGHTS}")
    blobs: dict[str, bytes] = {}
    for filename, expected in manifest.weights.items():
        file = path / filename
        if Path(filename).name != filename or not file.is_file():
            raise BundleError("bundle_missing", f"{filename}: listed in the manifest, not found")
        blob = file.read_bytes()
        actual = sha256_of(blob)
        if actual != expected.lower():
            raise BundleError(
                "bundle_checksum",
                f"{filename}: sha256 {actual} does not match the manifest ({expected}); "
                "the file is damaged or was replaced: copy the bundle again",
            )
        blobs[filename] = blob
    try:
        state = load_safetensors(blobs[WEIGHTS])
    except Exception as err:
        raise BundleError("bundle_invalid", f"{WEIGHTS}: not a safetensors file ({err})") from err
    _check_state_keys(manifest, state)
    logger.info("loaded bundle %s %s (%s)", manifest.name, manifest.version, manifest.task)
    return Bundle(path=path, manifest=manifest, state_dict=state)


def _check_state_keys(manifest: Manifest, state: dict[str, torch.Tensor]) -> None:
    spec = manifest.network
    with torch.device("meta"):
        expected = build_network(spec.architecture, spec.in_channels, spec.classes).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
            if keys
        )
        raise BundleError(
            "bundle_invalid",
            f"{WEIGHTS}: weights do not fit {spec.architecture} "
            f"(in_channels={spec.in_channels}, classes={spec.classes}): {detail}",
        )


def code_version() -> str:
    """The package version (``liver-agent`` distribution), or ``0+unknown``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("liver-agent")
    except PackageNotFoundError:
        return "0+unknown"


def save_bundle(
    path: Path | str,
    manifest: dict[str, Any] | Manifest,
    state_dict: dict[str, torch.Tensor],
    *,
    overwrite: bool = False,
) -> Bundle:
    """Write a bundle atomically (temporary folder beside ``path``, then rename).

    Parameters
    ----------
    path
        The bundle folder to create.
    manifest
        Manifest fields; ``format``, ``created``, ``code_version`` and ``weights`` are filled in
        when absent (``weights`` always from the written file).
    state_dict
        The network's weights (saved as float32/int64 CPU tensors).
    overwrite
        Replace an existing bundle at ``path``.

    Returns
    -------
    Bundle
        The bundle as written (manifest validated).
    """
    from safetensors.torch import save

    path = Path(path)
    if path.exists() and not overwrite:
        raise BundleError("bundle_exists", f"{path} exists; choose another folder or overwrite")
    fields = manifest.model_dump(mode="json") if isinstance(manifest, Manifest) else dict(manifest)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    blob = save(tensors)
    fields.setdefault("format", BUNDLE_FORMAT)
    fields.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
    fields.setdefault("code_version", code_version())
    fields["weights"] = {WEIGHTS: sha256_of(blob)}
    try:
        valid = Manifest.model_validate(fields)
    except ValidationError as err:
        raise BundleError("bundle_invalid", f"{MANIFEST}: {_field_message(err)}") from err
    _check_state_keys(valid, tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _write_synced(tmp / WEIGHTS, blob)
        text = json.dumps(valid.model_dump(mode="json"), indent=2) + "\n"
        _write_synced(tmp / MANIFEST, text.encode("utf-8"))
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote bundle %s %s to %s", valid.name, valid.version, path)
    return Bundle(path=path, manifest=valid, state_dict=tensors)


def _write_synced(file: Path, data: bytes) -> None:
    with file.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
