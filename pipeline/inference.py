"""Run the bundled networks: liver segmentation of a whole series, cirrhosis classification of
one slice. Batched, ``torch.inference_mode``, optional bfloat16 autocast from the manifest; on a
CPU optionally through OpenVINO (``runtime``, :mod:`pipeline.openvino_runtime`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from pipeline.bundle import Bundle, Manifest
from pipeline.errors import BundleError, NotEvaluatedError
from pipeline.preprocess import (
    classification_unit_image,
    fill_holes_per_slice,
    largest_component,
    normalise_channels,
    resize,
    scale_to_unit,
    with_context,
)
from pipeline.results import Classification, LiverSegmentation, ModelInfo, Volume

if TYPE_CHECKING:
    from pipeline.openvino_runtime import OpenVinoNetwork

logger = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` means CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BundleError("device_unavailable", "CUDA was asked for but no GPU is available")
    return torch.device(device)


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 is fast here: CUDA with bf16, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """bfloat16 autocast when the manifest asks for it and the device runs it fast (a CPU
    without bf16 support falls back to float32), else nothing."""
    if precision == "bfloat16" and bf16_supported(device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


RUNTIMES = ("torch", "openvino", "auto")


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """``torch`` or ``openvino``: ``auto`` means OpenVINO on a CPU where it is installed.

    Raises
    ------
    BundleError
        ``runtime_unavailable``: OpenVINO asked for on a GPU or where it is not installed.
    """
    from pipeline.openvino_runtime import openvino_available

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if runtime == "auto":
        return "openvino" if device.type == "cpu" and openvino_available() else "torch"
    if runtime == "openvino" and device.type != "cpu":
        raise BundleError(
            "runtime_unavailable", "the openvino runtime runs on the CPU only; use torch"
        )
    if runtime == "openvino" and not openvino_available():
        raise BundleError(
            "runtime_unavailable", "the openvino runtime was asked for but is not installed"
        )
    return runtime


class _Model:
    task = ""

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        runtime: str = "torch",
        cache: Path | None = None,
    ) -> None:
        if bundle.manifest.task != self.task:
            raise BundleError(
                "bundle_wrong_task",
                f"bundle {bundle.manifest.name} is a {bundle.manifest.task} model, "
                f"not a {self.task} model",
            )
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.device = resolve_device(device)
        self.network = bundle.build().to(self.device).to(memory_format=torch.channels_last)
        self.info: ModelInfo = bundle.info
        self.runtime = resolve_runtime(runtime, self.device)
        self._openvino: OpenVinoNetwork | None = None
        if self.runtime == "openvino":
            from pipeline.openvino_runtime import OpenVinoNetwork

            spec = self.manifest.input
            example = torch.zeros((1, spec.channels, spec.size[0], spec.size[1]))
            try:
                self._openvino = OpenVinoNetwork(
                    self.network,
                    example,
                    bfloat16=self.manifest.precision == "bfloat16",
                    threads=torch.get_num_threads(),
                    cache=cache,
                    weights_sha256=self.info.sha256,
                )
            except Exception as err:  # OpenVINO raises RuntimeError and others
                if runtime != "auto":
                    raise BundleError(
                        "runtime_unavailable",
                        f"OpenVINO could not load {bundle.manifest.name}: {err}",
                    ) from err
                # auto: PyTorch runs every network; a processor or network OpenVINO cannot
                # handle must not stop the agent
                logger.warning(
                    "openvino could not load %s (%s); running it with torch",
                    bundle.manifest.name,
                    err,
                )
                self.runtime = "torch"

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self._openvino is not None:
            return self._openvino(batch)
        with torch.inference_mode(), autocast(self.device, self.manifest.precision):
            out: torch.Tensor = self.network(batch.contiguous(memory_format=torch.channels_last))
        return out.float()


class SegmentationModel(_Model):
    """Liver segmentation of every slice of a series.

    Parameters
    ----------
    bundle
        A ``segmentation`` bundle from :func:`pipeline.bundle.load_bundle`.
    device
        ``auto`` (CUDA if available, else CPU), ``cpu`` or ``cuda``.
    batch_size
        Slices per forward pass.
    runtime
        ``torch``, ``openvino`` (CPU) or ``auto`` (:func:`resolve_runtime`).
    cache
        Folder that keeps OpenVINO's converted models between loads.
    """

    task = "segmentation"

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        batch_size: int = 16,
        runtime: str = "torch",
        cache: Path | None = None,
    ) -> None:
        super().__init__(bundle, device, runtime, cache)
        self.batch_size = batch_size

    def predict(self, volume: Volume) -> LiverSegmentation:
        """Segment the liver on every slice of ``volume``.

        Returns
        -------
        LiverSegmentation
            Mask (slices, rows, columns) at the series' own matrix (largest 3D component, holes
            filled per slice), liver area per slice in mm2 from PixelSpacing, and the volume in
            mL (sum of areas x slice spacing).
        """
        mask = self.segment(volume.pixels)
        area = mask.sum(axis=(1, 2), dtype=np.float64) * (
            float(volume.pixel_spacing[0]) * float(volume.pixel_spacing[1])
        )
        volume_ml = float(area.sum() * float(volume.slice_spacing) / 1000.0)
        logger.info(
            "segmented series %s: %d slices with liver, %.1f mL",
            volume.series_instance_uid,
            int(np.count_nonzero(area)),
            volume_ml,
        )
        return LiverSegmentation(mask=mask, area_mm2=area, volume_ml=volume_ml)

    def segment(
        self, pixels: npt.NDArray[np.floating], *, postprocess: bool = True
    ) -> npt.NDArray[np.bool_]:
        """Binary liver mask of a (slices, rows, columns) array of stored values."""
        if pixels.ndim != 3 or pixels.shape[0] == 0:
            raise ValueError(f"expected a (slices, rows, columns) array, got {pixels.shape}")
        spec = self.manifest.input
        unit = scale_to_unit(pixels, spec.normalisation)
        mask = np.empty(unit.shape, dtype=bool)
        rows_cols = (unit.shape[1], unit.shape[2])
        for start, logits in self._logits(torch.from_numpy(unit)):
            logits = resize(logits, rows_cols)
            mask[start : start + logits.shape[0]] = (logits[:, 0] > 0).cpu().numpy()
        if postprocess and mask.any():
            mask = fill_holes_per_slice(largest_component(mask))
        return mask

    def _logits(self, unit: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        spec = self.manifest.input
        size = (spec.size[0], spec.size[1])
        for start in range(0, unit.shape[0], self.batch_size):
            chunk = with_context(unit, spec.context, start, start + self.batch_size)
            chunk = chunk.to(self.device)
            batch = normalise_channels(resize(chunk, size), spec.normalisation, spec.channels)
            logits = self._forward(batch)
            if spec.flip_tta:
                mirrored = self._forward(torch.flip(batch, dims=(-1,)))
                logits = (logits + torch.flip(mirrored, dims=(-1,))) / 2
            yield start, logits


class ClassificationModel(_Model):
    """Cirrhosis classification of the caudate-level slice.

    Parameters
    ----------
    bundle
        A ``classification`` bundle.
    device
        ``auto``, ``cpu`` or ``cuda``.
    runtime
        ``torch``, ``openvino`` (CPU) or ``auto`` (:func:`resolve_runtime`).
    cache
        Folder that keeps OpenVINO's converted models between loads.
    """

    task = "classification"

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        runtime: str = "torch",
        cache: Path | None = None,
    ) -> None:
        super().__init__(bundle, device, runtime, cache)
        spec = self.manifest.classification
        assert spec is not None  # the manifest validator guarantees it for classifiers
        self.spec = spec

    def predict(
        self, image: npt.NDArray[np.floating], liver_mask: npt.NDArray[np.bool_] | None
    ) -> Classification:
        """Classify one slice (rows, columns) of stored values.

        In ``masked`` mode (upstream segmentation) the slice is masked by ``liver_mask`` and
        cropped to the liver; ``whole`` mode ignores the mask.

        Raises
        ------
        NotEvaluatedError
            ``liver_not_covered`` in masked mode when the mask is missing or empty.
        """
        probability = float(self.probabilities([image], [liver_mask])[0])
        return Classification(
            probability=probability,
            present=probability >= self.spec.threshold,
            threshold=self.spec.threshold,
            mode=self.spec.mode,
        )

    def probabilities(
        self,
        images: list[npt.NDArray[np.floating]],
        masks: list[npt.NDArray[np.bool_] | None],
    ) -> npt.NDArray[np.float64]:
        """Probability of cirrhosis for each slice (one batch)."""
        tensors = [self.input_tensor(img, msk) for img, msk in zip(images, masks, strict=True)]
        logits = self._forward(torch.cat(tensors))
        probs: npt.NDArray[np.float64] = (
            torch.softmax(logits, dim=1)[:, 1].cpu().numpy().astype(np.float64)
        )
        return probs

    def input_tensor(
        self, image: npt.NDArray[np.floating], mask: npt.NDArray[np.bool_] | None
    ) -> torch.Tensor:
        """The network input (1, channels, H, W) for one slice."""
        if image.ndim != 2:
            raise ValueError(f"expected one slice (rows, columns), got shape {image.shape}")
        spec = self.manifest.input
        if self.spec.mode == "masked":
            if mask is None or not np.any(mask):
                raise NotEvaluatedError(
                    "liver_not_covered",
                    "the liver segmentation is empty on the caudate-level slice, so the "
                    "liver-masked classification cannot run",
                )
            if mask.shape != image.shape:
                raise ValueError(f"mask shape {mask.shape} differs from image {image.shape}")
        unit = classification_unit_image(
            image,
            None if mask is None else mask.astype(bool, copy=False),
            spec.normalisation,
            mode=self.spec.mode,
            margin=self.spec.crop_margin,
        )
        tensor = torch.from_numpy(unit).to(self.device)[None, None]
        tensor = resize(tensor, (spec.size[0], spec.size[1]))
        return normalise_channels(tensor, spec.normalisation, spec.channels)
