"""Pre- and post-processing around the networks: intensity normalisation, resizing, the liver
crop of the classifier, and the mask clean-up (largest 3D component, holes filled per slice)."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from scipy import ndimage

from pipeline.bundle import Normalisation

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

# Percentiles of big arrays are taken on every second row and column: same value to a fraction
# of a percent, a quarter of the time.
_SUBSAMPLE_ABOVE = 1 << 18


def _percentiles(values: npt.NDArray[np.floating], low: float, high: float) -> tuple[float, float]:
    if values.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(values, [low, high])
    return float(lo), float(hi)


def scale_to_unit(
    pixels: npt.NDArray[np.floating],
    norm: Normalisation,
    mask: npt.NDArray[np.bool_] | None = None,
) -> FloatArray:
    """Clip to the normalisation's percentiles and scale to 0..1.

    Parameters
    ----------
    pixels
        One slice (rows, columns) or a stack (slices, rows, columns).
    norm
        The bundle's normalisation; ``scope`` picks the pixels the percentiles come from:
        ``volume`` all of ``pixels``, ``slice`` each slice on its own, ``mask`` the pixels
        where ``mask`` is true.
    mask
        Needed for ``scope == "mask"``; same shape as ``pixels``.

    Returns
    -------
    numpy.ndarray
        float32, same shape, values in 0..1 (zeros where the range is empty).
    """
    arr = np.asarray(pixels, dtype=np.float32)
    low, high = norm.low_percentile, norm.high_percentile
    if norm.scope == "slice" and arr.ndim == 3:
        view = arr[:, ::2, ::2] if arr[0].size > _SUBSAMPLE_ABOVE else arr
        bounds = np.percentile(view.reshape(view.shape[0], -1), [low, high], axis=1)
        lo = bounds[0].astype(np.float32)[:, None, None]
        span = (bounds[1] - bounds[0]).astype(np.float32)[:, None, None]
    else:
        if norm.scope == "mask":
            if mask is None:
                raise ValueError("mask-scoped normalisation needs a mask")
            lo_f, hi_f = _percentiles(arr[mask], low, high)
        else:
            view = arr[..., ::2, ::2] if arr.size > _SUBSAMPLE_ABOVE else arr
            lo_f, hi_f = _percentiles(view, low, high)
        lo = np.float32(lo_f)
        span = np.float32(hi_f - lo_f)
    safe = np.where(span > 0, span, np.float32(1.0))
    out: FloatArray = arr - lo
    out /= safe
    np.clip(out, 0.0, 1.0, out=out)
    if np.any(span <= 0):
        out *= (span > 0).astype(np.float32)
    return out


def resize(batch: torch.Tensor, size: tuple[int, int], *, mode: str = "bilinear") -> torch.Tensor:
    """Resize a (batch, channels, rows, columns) tensor; returned as is when already that size."""
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    if mode == "nearest":
        return F.interpolate(batch, size=size, mode="nearest")
    downsizing = batch.shape[-2] > size[0] or batch.shape[-1] > size[1]
    return F.interpolate(
        batch, size=size, mode="bilinear", align_corners=False, antialias=downsizing
    )


def with_context(
    unit: torch.Tensor, context: int, start: int = 0, stop: int | None = None
) -> torch.Tensor:
    """Slices ``start:stop`` of a (slices, H, W) volume as (n, 2*context+1, H, W): each slice
    with its neighbours below and above as channels (2.5D); the first and last slices repeat
    themselves where a neighbour is missing. ``context`` 0 gives (n, 1, H, W)."""
    stop = unit.shape[0] if stop is None else min(stop, unit.shape[0])
    if context == 0:
        return unit[start:stop].unsqueeze(1)
    index = torch.arange(start, stop)
    offsets = torch.arange(-context, context + 1)
    neighbours = (index[:, None] + offsets[None, :]).clamp_(0, unit.shape[0] - 1)
    return unit[neighbours]


def normalise_channels(unit: torch.Tensor, norm: Normalisation, channels: int) -> torch.Tensor:
    """Turn a (batch, 1, H, W) 0..1 tensor into the network input (batch, channels, H, W):
    the grey slice repeated per channel (or, for a (batch, channels, H, W) 2.5D tensor, each
    channel as it is), minus the channel mean, divided by the channel std."""
    mean = torch.tensor(norm.mean, dtype=unit.dtype, device=unit.device).view(1, channels, 1, 1)
    inv_std = 1.0 / torch.tensor(norm.std, dtype=unit.dtype, device=unit.device)
    scale = inv_std.view(1, channels, 1, 1)
    # One allocation: (x - mean) / std == x * scale + (-mean * scale), broadcast over channels.
    return torch.addcmul(-mean * scale, unit, scale)


def liver_box(mask: BoolArray, margin: float) -> tuple[int, int, int, int]:
    """Square box (row0, row1, col0, col1) around the mask, widened by ``margin`` of its side.

    The box may reach outside the image; :func:`crop_box` pads with zeros.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask has no box")
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(r1 - r0, c1 - c0)
    side = round(side * (1.0 + 2.0 * margin)) or 1
    rc, cc = (r0 + r1) / 2.0, (c0 + c1) / 2.0
    top, left = round(rc - side / 2.0), round(cc - side / 2.0)
    return top, top + side, left, left + side


def crop_box(image: FloatArray, box: tuple[int, int, int, int]) -> FloatArray:
    """Cut ``box`` out of a 2D image, zero-padded where it leaves the image."""
    r0, r1, c0, c1 = box
    out = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
    sr0, sr1 = max(r0, 0), min(r1, image.shape[0])
    sc0, sc1 = max(c0, 0), min(c1, image.shape[1])
    if sr1 > sr0 and sc1 > sc0:
        out[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = image[sr0:sr1, sc0:sc1]
    return out


def classification_unit_image(
    image: npt.NDArray[np.floating],
    mask: BoolArray | None,
    norm: Normalisation,
    *,
    mode: str,
    margin: float,
) -> FloatArray:
    """The classifier's 0..1 image before resizing.

    ``masked``: the slice scaled on the liver pixels, zero outside the liver, cropped to the
    liver box with a margin. ``whole``: the whole slice scaled.
    """
    if mode == "whole":
        return scale_to_unit(image, norm)
    if mask is None or not mask.any():
        raise ValueError("masked mode needs a non-empty liver mask")
    unit = scale_to_unit(image, norm, mask=mask)
    unit *= mask
    return crop_box(unit, liver_box(mask, margin))


def _bounding_box(mask: BoolArray) -> tuple[slice, slice, slice] | None:
    """Slices of a (slices, rows, cols) mask's bounding box, one pixel wider in rows and columns
    (inside the image): label and fill work on that box only, which gives the same result."""
    if not mask.any():
        return None
    box = []
    for axis, margin in ((0, 0), (1, 1), (2, 1)):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        lo = max(int(present[0]) - margin, 0)
        hi = min(int(present[-1]) + 1 + margin, mask.shape[axis])
        box.append(slice(lo, hi))
    return box[0], box[1], box[2]


def largest_component(mask: BoolArray) -> BoolArray:
    """Keep the largest 3D connected component (26-connectivity) of a (slices, rows, cols) mask."""
    box = _bounding_box(mask)
    if box is None:
        return mask
    labels, count = ndimage.label(mask[box], structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    keep: BoolArray = np.zeros_like(mask)
    keep[box] = labels == int(np.argmax(sizes))
    return keep


def fill_holes_per_slice(mask: BoolArray) -> BoolArray:
    """Fill holes in each slice of a (slices, rows, cols) mask, in place; returns it."""
    box = _bounding_box(mask)
    if box is None:
        return mask
    inner = mask[box]  # a view: filled in place
    for k in np.flatnonzero(inner.any(axis=(1, 2))):
        inner[k] = ndimage.binary_fill_holes(inner[k])
    return mask
