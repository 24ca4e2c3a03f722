"""Burn the liver outline and result text into an RGB picture of one slice (Pillow)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

logger = logging.getLogger(__name__)

OUTLINE_RGB = (255, 215, 0)
WHITE = (255, 255, 255)
YELLOW = (255, 230, 90)
RED = (255, 90, 80)

FontType = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class TextLine:
    """One line of burned-in text and its colour."""

    text: str
    rgb: tuple[int, int, int] = WHITE


def window_to_uint8(image: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """Map a slice to 0..255 with a 0.5-99.5 percentile window (MR has no fixed window)."""
    finite = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = np.percentile(finite, [0.5, 99.5])
    if high <= low:
        return np.zeros(finite.shape, dtype=np.uint8)
    scaled = (finite - low) * (255.0 / (high - low))
    out: npt.NDArray[np.uint8] = np.clip(scaled, 0, 255).astype(np.uint8)
    return out


def outline(mask: npt.NDArray[np.bool_], width: int = 1) -> npt.NDArray[np.bool_]:
    """Pixels of ``mask`` within ``width`` pixels of its border."""
    inner = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return np.asarray(mask & ~inner, dtype=bool)


def load_font(size: int) -> FontType:
    """Pillow's built-in font at ``size`` px (FreeType); its bitmap font without FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # Pillow built without FreeType
        logger.warning("FreeType unavailable: SC text uses Pillow's small bitmap font")
        return ImageFont.load_default()


def _fitting_font(draw: ImageDraw.ImageDraw, lines: Sequence[TextLine], width: int) -> FontType:
    size = max(10, width // 34)
    while True:
        font = load_font(size)
        widest = max((draw.textlength(line.text, font=font) for line in lines), default=0.0)
        if widest <= width or size <= 8:
            return font
        size = max(8, int(size * width / widest))


def render_slice(
    image: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    mask: npt.NDArray[np.bool_] | None,
    *,
    min_size: int = 512,
) -> npt.NDArray[np.uint8]:
    """A slice windowed (:func:`window_to_uint8`), scaled up by a whole factor until its larger
    side is at least ``min_size``, with the outline of ``mask`` (if any) drawn on it.

    The picture of the Secondary Capture and of the web preview (``agent.jobs.preview``).

    Returns
    -------
    numpy.ndarray
        RGB picture, uint8, shape (rows * f, columns * f, 3).
    """
    if image.ndim != 2 or (mask is not None and image.shape != mask.shape):
        shape = None if mask is None else mask.shape
        raise ValueError(f"image {image.shape} and mask {shape} must be equal 2-D shapes")
    rows, cols = image.shape
    factor = max(1, math.ceil(min_size / max(rows, cols)))
    gray = Image.fromarray(window_to_uint8(np.asarray(image, dtype=np.float32))).resize(
        (cols * factor, rows * factor), Image.Resampling.BILINEAR
    )
    rgb = np.repeat(np.asarray(gray)[:, :, None], 3, axis=2)
    if mask is not None:
        big_mask = np.kron(mask.astype(np.uint8), np.ones((factor, factor), dtype=np.uint8)) > 0
        rgb[outline(big_mask, width=max(1, factor // 2 + 1))] = OUTLINE_RGB
    return rgb


#: Colour stops of the heat map (0 -> 1): dark blue, cyan, yellow, red (a jet-like scale).
HEAT_STOPS = np.array([0.0, 0.35, 0.7, 1.0])
HEAT_RGB = np.array([[0, 0, 160], [0, 220, 255], [255, 230, 0], [230, 0, 0]], dtype=np.float32)


def heat_colours(cam: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """RGB (0..255, float) of a 0..1 map on :data:`HEAT_STOPS`."""
    values = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    return np.stack(
        [np.interp(values, HEAT_STOPS, HEAT_RGB[:, k]) for k in range(3)], axis=-1
    ).astype(np.float32)


def blend_heat(
    rgb: npt.NDArray[np.uint8], cam: npt.NDArray[np.floating], *, opacity: float = 0.5
) -> npt.NDArray[np.uint8]:
    """Lay a 0..1 heat map (the slice's shape, scaled up here to the picture's) over a
    picture; the colour's weight grows with the heat (no heat: the picture unchanged)."""
    factor = rgb.shape[0] // cam.shape[0]
    big: npt.NDArray[np.float32] = np.kron(
        np.asarray(cam, dtype=np.float32), np.ones((factor, factor), np.float32)
    ).astype(np.float32)
    weight = (opacity * np.clip(big, 0.0, 1.0) ** 0.7)[:, :, None]
    out = rgb.astype(np.float32) * (1 - weight) + heat_colours(big) * weight
    result: npt.NDArray[np.uint8] = np.clip(out, 0, 255).astype(np.uint8)
    return result


def render_heatmap(
    image: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    mask: npt.NDArray[np.bool_] | None,
    cam: npt.NDArray[np.floating],
    *,
    min_size: int = 512,
) -> npt.NDArray[np.uint8]:
    """The slice as :func:`render_slice` draws it with the heat map laid over it (the liver
    outline drawn again on top, so that one sees whether the heat lies in the liver)."""
    if cam.shape != image.shape:
        raise ValueError(f"heat map {cam.shape} and image {image.shape} must have one shape")
    rgb = blend_heat(render_slice(image, None, min_size=min_size), cam)
    if mask is not None and mask.any():
        factor = rgb.shape[0] // image.shape[0]
        big_mask = np.kron(mask.astype(np.uint8), np.ones((factor, factor), dtype=np.uint8)) > 0
        rgb[outline(big_mask, width=max(1, factor // 2 + 1))] = OUTLINE_RGB
    return rgb


def render_overlay(
    image: npt.NDArray[np.floating],
    mask: npt.NDArray[np.bool_],
    lines: Sequence[TextLine],
    *,
    min_size: int = 512,
    cam: npt.NDArray[np.floating] | None = None,
) -> npt.NDArray[np.uint8]:
    """Render a slice with the mask outline and a text panel below it.

    Parameters
    ----------
    image
        The slice (rows x columns), any real dtype.
    mask
        The liver mask of the slice, same shape.
    lines
        Text lines for the panel under the image, top to bottom.
    min_size
        The picture is scaled up by a whole factor until its larger side is at least this.
    cam
        A 0..1 heat map of the slice to lay over it (:func:`render_heatmap`), or None.

    Returns
    -------
    numpy.ndarray
        RGB picture, uint8, shape (rows * f + panel, columns * f, 3).
    """
    if cam is None:
        rgb = render_slice(image, mask, min_size=min_size)
    else:
        rgb = render_heatmap(image, mask, cam, min_size=min_size)
    rows_scaled, width = rgb.shape[:2]
    margin = max(4, width // 64)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = _fitting_font(probe, lines, width - 2 * margin)
    line_height = int(font.getbbox("Ag")[3]) + max(2, margin // 2)
    panel_height = 2 * margin + line_height * len(lines)
    canvas = Image.new("RGB", (width, rows_scaled + panel_height), (0, 0, 0))
    canvas.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = rows_scaled + margin
    for line in lines:
        draw.text((margin, y), line.text, fill=line.rgb, font=font)
        y += line_height
    return np.asarray(canvas, dtype=np.uint8).copy()
