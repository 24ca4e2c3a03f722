"""MR signal of each tissue for each kind of sequence, and the image of a painted grid.

Signal models are the textbook ones (spin echo, spoiled gradient echo, diffusion decay); the
numbers are plausible rather than exact. Contrast agent shortens T1 by ``r1 * concentration``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.phantoms.anatomy import BodyModel
from pipeline.phantoms.painter import Painted
from pipeline.phantoms.shapes import F32
from pipeline.phantoms.tissues import (
    FAT_T1,
    FAT_T2,
    FAT_T2S,
    N_TISSUES,
    PROPERTIES,
    Tissue,
    TissueProperties,
)

R1_PER_MM = 4.5e-3  # gadolinium relaxivity, 1/(ms mM)

#: Contrast concentration (mM) per tissue and dynamic phase; tissues not named stay at 0.
_ENHANCEMENT: dict[str, dict[Tissue, float]] = {
    "arterial": {
        Tissue.AORTA: 7.0,
        Tissue.HEART_BLOOD: 5.0,
        Tissue.KIDNEY_CORTEX: 4.5,
        Tissue.KIDNEY_MEDULLA: 0.8,
        Tissue.SPLEEN: 2.5,
        Tissue.PANCREAS: 2.0,
        Tissue.PORTAL_VEIN: 1.2,
        Tissue.PORTAL_BRANCH: 0.8,
        Tissue.LIVER_RIGHT: 0.35,
        Tissue.LIVER_LEFT: 0.35,
        Tissue.CAUDATE: 0.35,
        Tissue.MYOCARDIUM: 1.5,
        Tissue.GI_WALL: 1.0,
        Tissue.MUSCLE: 0.2,
        Tissue.IVC: 0.4,
    },
    "portal": {
        Tissue.AORTA: 3.0,
        Tissue.HEART_BLOOD: 3.0,
        Tissue.KIDNEY_CORTEX: 3.0,
        Tissue.KIDNEY_MEDULLA: 2.5,
        Tissue.SPLEEN: 1.8,
        Tissue.PANCREAS: 1.4,
        Tissue.PORTAL_VEIN: 4.0,
        Tissue.PORTAL_BRANCH: 3.8,
        Tissue.HEPATIC_VEIN: 3.0,
        Tissue.IVC: 2.8,
        Tissue.LIVER_RIGHT: 1.3,
        Tissue.LIVER_LEFT: 1.3,
        Tissue.CAUDATE: 1.3,
        Tissue.MYOCARDIUM: 1.2,
        Tissue.GI_WALL: 1.0,
        Tissue.MUSCLE: 0.4,
    },
    "delayed": {
        Tissue.AORTA: 1.6,
        Tissue.HEART_BLOOD: 1.6,
        Tissue.KIDNEY_CORTEX: 1.8,
        Tissue.KIDNEY_MEDULLA: 3.0,
        Tissue.SPLEEN: 1.1,
        Tissue.PANCREAS: 0.9,
        Tissue.PORTAL_VEIN: 1.6,
        Tissue.PORTAL_BRANCH: 1.6,
        Tissue.HEPATIC_VEIN: 1.6,
        Tissue.IVC: 1.6,
        Tissue.LIVER_RIGHT: 0.9,
        Tissue.LIVER_LEFT: 0.9,
        Tissue.CAUDATE: 0.9,
        Tissue.MYOCARDIUM: 0.8,
        Tissue.GI_WALL: 0.8,
        Tissue.MUSCLE: 0.5,
    },
}
_SEPTA_ENHANCEMENT = {"pre": 0.0, "arterial": 0.2, "portal": 0.9, "delayed": 1.6}
#: Fibrotic septa: bright on T2, dark on T1, restricted-ish, enhance late.
_FIBROSIS = TissueProperties(0.85, 1000, 68, 40, 1050)


@dataclass(frozen=True)
class Contrast:
    """What a sequence does to magnetisation.

    ``kind``: ``se`` (spin echo / single-shot / TSE), ``gre`` (spoiled gradient echo),
    ``ssfp`` (balanced steady state, localisers), ``dwi`` (spin-echo EPI with a b-value).
    ``fat_sat``: residual fraction of fat signal (1 = no fat suppression).
    ``opposed``: fat and water subtract (opposed-phase echo).
    """

    kind: str
    te: float
    tr: float
    flip: float = 90.0
    fat_sat: float = 1.0
    opposed: bool = False
    b_value: float = 0.0
    phase: str = "pre"  # contrast phase of a dynamic series
    inflow: float = 0.0  # how bright flowing blood is on gradient echo (0..1)
    single_shot: bool = False  # each slice excited once: full T1 recovery whatever TR says


def _sig(p: TissueProperties, c: Contrast, t1: float, t2: float, t2s: float) -> float:
    if c.kind == "se" or c.kind == "dwi":
        recovery = 1.0 if c.single_shot else 1 - np.exp(-c.tr / t1)
        s = p.pd * recovery * np.exp(-c.te / t2)
    elif c.kind == "gre":
        e1 = np.exp(-c.tr / t1)
        a = np.deg2rad(c.flip)
        s = p.pd * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-c.te / t2s)
    elif c.kind == "ssfp":
        a = np.deg2rad(c.flip)
        s = p.pd * np.sin(a) / ((t1 / t2 + 1) - np.cos(a) * (t1 / t2 - 1))
    else:
        raise ValueError(f"unknown contrast kind {c.kind!r}")
    return float(s)


def tissue_signal(p: TissueProperties, c: Contrast, conc: float = 0.0) -> tuple[float, float]:
    """(water, fat) signal of one tissue for one contrast; flow voids and diffusion included."""
    t1 = 1.0 / (1.0 / p.t1 + R1_PER_MM * conc)
    water = _sig(p, c, t1, p.t2, p.t2s) * (1 - p.fat)
    fat = _sig(p, c, FAT_T1, FAT_T2, FAT_T2S) * p.fat * c.fat_sat if p.fat > 0 else 0.0
    if p.flow > 0:
        if c.kind in ("se", "dwi"):
            water *= 0.05 + 0.95 * (1.0 - p.flow) ** 2  # flow void
        elif c.kind == "gre":
            water *= 1.0 + 2.0 * c.inflow * p.flow
    if c.kind == "dwi":
        adc = p.adc + 20000.0 * p.flow
        water *= float(np.exp(-c.b_value * adc * 1e-6))
        fat *= float(np.exp(-c.b_value * 100e-6))
    return water, fat


def lookup(model: BodyModel, c: Contrast) -> tuple[F32, F32]:
    """Per-label water and fat signal tables for one patient and one contrast."""
    water = np.zeros(N_TISSUES, np.float32)
    fat = np.zeros(N_TISSUES, np.float32)
    conc = _ENHANCEMENT.get(c.phase, {})
    for t in Tissue:
        p = PROPERTIES[t]
        if t in (Tissue.LIVER_RIGHT, Tissue.LIVER_LEFT, Tissue.CAUDATE):
            p = TissueProperties(
                p.pd,
                p.t1 * (1.08 if model.cirrhotic else 1.0),
                p.t2 * model.liver_t2_scale,
                p.t2s,
                p.adc * (0.85 if model.cirrhotic else 1.0),
                fat=model.liver_fat,
            )
        w, f = tissue_signal(p, c, conc.get(t, 0.0))
        jit = model.tissue_jitter[int(t)]
        water[int(t)] = w * jit
        fat[int(t)] = f * jit
    return water, fat


def render(model: BodyModel, painted: Painted, c: Contrast) -> F32:
    """Noise-free magnitude image of a painted grid (arbitrary units, liver about 0.1-0.3)."""
    water_lut, fat_lut = lookup(model, c)
    labels = painted.labels
    if c.opposed:
        water = np.take(water_lut, labels)
        fat = np.take(fat_lut, labels)
    else:
        water = np.take(water_lut + fat_lut, labels)
        fat = None
    # Liver texture: the fields are zero outside the liver, so no mask is needed.
    a = np.float32(-0.07 if model.cirrhotic else 0.025)
    nod = np.clip(painted.nodules, -1.5, 2.0) if model.cirrhotic else painted.nodules
    water *= 1.0 + a * nod
    if model.septa > 0:
        fw, _ = tissue_signal(_FIBROSIS, c, _SEPTA_ENHANCEMENT.get(c.phase, 0.0))
        water += painted.septa * (np.float32(fw) - water)
    if fat is not None:
        # Partial volume in-plane: fat and water of neighbouring voxels mix before they
        # subtract, which draws the opposed-phase India-ink line at fat-water borders.
        out = blur(water)
        out -= blur(fat)
        np.abs(out, out=out)
        return out
    return blur(water)


def blur(a: F32) -> F32:
    """[1 2 1] / 4 smoothing along rows and columns (k-space apodisation, partial volume)."""
    q = a * np.float32(0.25)
    out = q + q
    out[:, 1:, :] += q[:, :-1, :]
    out[:, :-1, :] += q[:, 1:, :]
    np.multiply(out, np.float32(0.25), out=q)
    np.add(q, q, out=out)
    out[:, :, 1:] += q[:, :, :-1]
    out[:, :, :-1] += q[:, :, 1:]
    return out


def bias_field(
    shape_axes: tuple[F32, F32, F32], centre: tuple[float, float, float], rng: np.random.Generator
) -> F32:
    """Smooth receive-coil sensitivity in patient coordinates (multiplicative, about 1)."""
    x, y, z = shape_axes
    a, b, c, d = (
        rng.uniform(-0.12, 0.12),
        rng.uniform(0.05, 0.25),
        rng.uniform(0.0, 0.2),
        rng.uniform(-0.1, 0.1),
    )
    dx = (x - np.float32(centre[0])) / np.float32(200.0)
    dy = (y - np.float32(centre[1])) / np.float32(130.0)
    dz = (z - np.float32(centre[2])) / np.float32(250.0)
    out: F32 = (1.0 + a * dx + b * dy * dy + c * dx * dx + d * dy - 0.3 * dz * dz).astype(
        np.float32
    )
    return out


_BANK_SIZE = 1 << 21
_bank: list[F32] = []


def noise_bank() -> F32:
    """2**21 standard normal numbers, drawn once per process from a fixed seed."""
    if not _bank:
        _bank.append(np.random.default_rng(0x5EED).standard_normal(_BANK_SIZE, dtype=np.float32))
    return _bank[0]


def noise(shape: tuple[int, int, int], rng: np.random.Generator) -> F32:
    """Gaussian noise for a stack: each slice a window of the bank at a random offset."""
    bank = noise_bank()
    n = shape[1] * shape[2]
    if n >= _BANK_SIZE // 4:
        return rng.standard_normal(shape, dtype=np.float32)
    offsets = rng.integers(0, _BANK_SIZE - n, size=shape[0])
    out = np.empty(shape, np.float32)
    for k, off in enumerate(offsets):
        out[k] = bank[off : off + n].reshape(shape[1], shape[2])
    return out


def add_noise(image: F32, sigma: float, rng: np.random.Generator) -> F32:
    """Rician magnitude noise in place: ``|image + sigma (n1 + i n2)|``."""
    s = np.float32(sigma)
    re = image
    re += s * noise(image.shape, rng)
    re *= re
    im = noise(image.shape, rng)
    im *= s
    im *= im
    re += im
    np.sqrt(re, out=re)
    return re


def to_stored(
    image: F32, max_value: float, rng_pct: float = 99.98
) -> tuple[npt.NDArray[np.uint16], float]:
    """Scale to 12-bit unsigned stored values; returns the values and the scale used.

    The ``rng_pct`` percentile of the image maps to ``max_value`` (below 4095, so that only
    rare noise peaks clip).
    """
    sample = image.reshape(-1)[:: max(1, image.size // 50_000)]
    top = float(np.percentile(sample, rng_pct)) or 1.0
    scale = max_value / top
    out = np.clip(image * np.float32(scale) + np.float32(0.5), 0, 4095).astype(np.uint16)
    return out, scale
