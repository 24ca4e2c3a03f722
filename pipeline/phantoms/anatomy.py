"""The analytic body model: organ shapes and placement drawn from a seed (body frame, mm).

Body frame: x to the patient's left, y posterior, z superior (LPS axes), origin on the midline
at the centre of the trunk, z = 0 at the centre of the caudate ellipsoid. Patient coordinates
are the body frame rotated about z, then shifted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.phantoms.shapes import Vec3, WaveNoise


@dataclass(frozen=True)
class Ellipsoid:
    centre: Vec3
    radii: Vec3
    angles: Vec3 = (0.0, 0.0, 0.0)  # degrees about x, y, z

    def bbox(self, margin: float = 0.0) -> tuple[Vec3, Vec3]:
        r = max(self.radii) + margin if any(self.angles) else None
        rad = (r, r, r) if r is not None else tuple(v + margin for v in self.radii)
        lo = tuple(c - e for c, e in zip(self.centre, rad, strict=True))
        hi = tuple(c + e for c, e in zip(self.centre, rad, strict=True))
        return (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2])


@dataclass(frozen=True)
class Tube:
    a: Vec3
    b: Vec3
    ra: float
    rb: float

    def bbox(self, margin: float = 0.0) -> tuple[Vec3, Vec3]:
        r = max(self.ra, self.rb) + margin
        lo = tuple(min(p, q) - r for p, q in zip(self.a, self.b, strict=True))
        hi = tuple(max(p, q) + r for p, q in zip(self.a, self.b, strict=True))
        return (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2])


def chain(points: Sequence[Vec3], radii: Sequence[float]) -> tuple[Tube, ...]:
    """Tubes joining consecutive points, radius interpolated between the given point radii."""
    return tuple(
        Tube(points[i], points[i + 1], radii[i], radii[i + 1]) for i in range(len(points) - 1)
    )


@dataclass(frozen=True)
class BodyModel:
    """Every number the painter needs; made by :func:`body_model`."""

    seed: int
    cirrhotic: bool
    ascites: bool
    # placement: patient = shift + Rz(rotation) @ body
    shift: Vec3
    rotation_deg: float
    # trunk wall
    skin: tuple[float, float]
    back_y: float
    taper: tuple[float, float, float]  # chest narrowing, waist, abdominal bulge (fractions)
    fat_mm: float
    muscle_mm: float
    # spine
    vertebra_y: float
    vertebra_r: float
    # liver
    right_lobe: Ellipsoid
    left_lobe: Ellipsoid
    caudate: Ellipsoid
    lv_fissure_mm: float
    teres_fissure_mm: float
    nodularity_mm: float
    surface_noise: WaveNoise
    nodule_noise: WaveNoise
    warp: tuple[WaveNoise, WaveNoise]  # smooth in-plane displacement of the liver (shape)
    bowel_noise: WaveNoise  # loops of small bowel and mesentery below the liver
    warp_mm: float
    septa: float  # 0 normal, up to 1
    disc_period: float
    disc_phase: float
    liver_fat: float
    liver_t2_scale: float
    # other organs
    gallbladder: Ellipsoid
    spleen: Ellipsoid
    stomach: Ellipsoid
    stomach_gas: float  # gas above y < centre - gas * ry
    antrum: Tube
    kidneys: tuple[Ellipsoid, Ellipsoid]
    pancreas: tuple[Tube, ...]
    lungs: tuple[Ellipsoid, Ellipsoid]
    heart: Ellipsoid
    colon: tuple[tuple[Tube, int], ...]  # tube and Tissue content code
    small_bowel: tuple[tuple[Tube, int], ...]
    # vessels and ducts
    aorta: tuple[float, float, float]  # x, y, radius
    ivc: tuple[float, float, float, float, float]  # x, y, rx, ry, top z
    portal_vein: tuple[Tube, ...]
    portal_branches: tuple[Tube, ...]
    hepatic_veins: tuple[Tube, ...]
    bile_ducts: tuple[Tube, ...]
    intra_ducts: tuple[Tube, ...]
    ascites_mm: float
    tissue_jitter: tuple[float, ...]  # per Tissue multiplier of proton density

    @property
    def caudate_centre_z(self) -> float:
        """Patient z (mm) of the centre of the caudate ellipsoid (see ``truth.caudate_level_z``
        for the level where the caudate lobe is largest)."""
        return self.shift[2] + self.caudate.centre[2]

    @property
    def liver_centre(self) -> Vec3:
        """Patient coordinates of the middle of the liver's bounding box."""
        lo, hi = self.liver_bbox()
        c = [(a + b) / 2 for a, b in zip(lo, hi, strict=True)]
        return self.to_patient((c[0], c[1], c[2]))

    def liver_bbox(self) -> tuple[Vec3, Vec3]:
        boxes = [
            e.bbox(self.nodularity_mm * 2 + 2)
            for e in (self.right_lobe, self.left_lobe, self.caudate)
        ]
        lo = tuple(min(b[0][i] for b in boxes) for i in range(3))
        hi = tuple(max(b[1][i] for b in boxes) for i in range(3))
        return (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2])

    def to_patient(self, p: Vec3) -> Vec3:
        t = np.deg2rad(self.rotation_deg)
        c, s = np.cos(t), np.sin(t)
        x = self.shift[0] + c * p[0] - s * p[1]
        y = self.shift[1] + s * p[0] + c * p[1]
        return float(x), float(y), float(self.shift[2] + p[2])


def body_model(seed: int, *, cirrhotic: bool, ascites: bool = False) -> BodyModel:
    """Draw one body from ``seed``; ``cirrhotic`` applies the disease to the same person.

    The same seed gives the same trunk and organ placement for the normal and the cirrhotic
    variant; the disease changes lobe proportions, surface, parenchyma and spleen size.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x11A7]))
    drng = np.random.default_rng(np.random.SeedSequence([seed, 0xC1B8]))

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    def n(sd: float) -> float:
        return float(rng.normal(0.0, sd))

    def j(sd: float = 0.06) -> float:
        return float(np.clip(1.0 + rng.normal(0.0, sd), 1 - 2.5 * sd, 1 + 2.5 * sd))

    bx, by = u(145, 172), u(108, 128)
    back = by * 0.93
    fat, muscle = u(8, 28), u(7, 12)
    inner_x = bx - fat - muscle
    inner_front = by - fat - muscle
    vr = u(17, 21)
    vy = back - fat * 0.6 - u(55, 62)

    s = u(0.9, 1.1)
    right = Ellipsoid((-66 + n(4), 4 + n(4), 12 + n(5)), (64 * s * j(), 74 * s * j(), 80 * s * j()))
    left = Ellipsoid(
        (14 + n(5), -42 + n(3), 20 + n(5)), (76 * s * j(0.13), 36 * s * j(), 44 * s * j())
    )
    ivc_x, ivc_dy = -u(18, 25), u(13, 17)
    caud = Ellipsoid(
        (ivc_x + 15 + n(2), vy - vr - ivc_dy - 14 + n(2), 0.0),
        (17 * s * j(), 15 * s * j(), 27 * s * j()),
    )
    spleen_r = (40 * j(0.1), 22 * j(0.1), 50 * j(0.1))
    spleen_c = (inner_x - 28 + n(3), vy + 6 + n(4), 22 + n(6))
    spleen_rz = -40 + n(8)

    lv_fissure, teres = u(1.8, 3.0), u(2.0, 3.5)
    nodularity = 0.25
    septa = 0.0
    surface_wl = 14.0
    t2_scale = j(0.05)
    if cirrhotic:
        sr = float(drng.uniform(0.7, 0.84))
        srz = float(drng.uniform(0.85, 0.95))
        sc = float(drng.uniform(1.35, 1.65))
        scz = float(drng.uniform(1.05, 1.25))
        sl = float(drng.uniform(1.0, 1.18))
        rc, rr = right.centre, right.radii
        right = Ellipsoid(
            (rc[0] + rr[0] * (1 - sr) * 0.6, rc[1] - rr[1] * (1 - sr) * 0.3, rc[2]),
            (rr[0] * sr, rr[1] * sr, rr[2] * srz),
        )
        cc, cr = caud.centre, caud.radii
        caud = Ellipsoid((cc[0] + 2, cc[1], 0.0), (cr[0] * sc, cr[1] * sc, cr[2] * scz))
        lc, lr = left.centre, left.radii
        left = Ellipsoid(lc, (lr[0] * sl, lr[1] * sl, lr[2]))
        ss = float(drng.uniform(1.3, 1.6))
        spleen_r = (spleen_r[0] * ss, spleen_r[1] * ss, spleen_r[2] * ss)
        spleen_c = (
            min(spleen_c[0], inner_x - spleen_r[1] - 6) - (ss - 1) * 12,
            spleen_c[1] - (ss - 1) * 18,
            spleen_c[2] - (ss - 1) * 35,
        )
        lv_fissure = float(drng.uniform(4.0, 7.0))
        teres = float(drng.uniform(4.0, 8.0))
        nodularity = float(drng.uniform(2.0, 3.6))
        septa = float(drng.uniform(0.35, 0.7))
        surface_wl = float(drng.uniform(14, 22))
        t2_scale *= float(drng.uniform(1.02, 1.12))
    surface_noise = WaveNoise.random(rng, surface_wl, 14)
    nodule_noise = WaveNoise.random(drng, float(drng.uniform(12.0, 20.0)), 16)
    warp = (WaveNoise.random(rng, 160.0, 6), WaveNoise.random(rng, 160.0, 6))
    bowel_noise = WaveNoise.random(rng, u(38, 55), 10)

    r_top = right.centre[2] + right.radii[2]
    l_top = left.centre[2] + left.radii[2]
    ivc = (ivc_x, vy - vr - ivc_dy, u(11, 14), u(8, 11), r_top - 6)
    ar = u(9, 12)
    aorta = (u(12, 18), vy - vr - ar + 2, ar)
    ay = aorta[1]

    gb = Ellipsoid(
        (-38 + n(5), -40 + n(4), -36 + n(6)),
        (15 * j(0.15), 13 * j(0.15), 34 * j(0.15)),
        (-35 + n(8), n(8), n(10)),
    )
    stomach = Ellipsoid(
        (52 + n(5), -10 + n(5), 22 + n(6)),
        (38 * j(0.12), 30 * j(0.12), 52 * j(0.12)),
        (-20 + n(5), 0.0, 20 + n(8)),
    )
    antrum = Tube((38, -32, -12), (-5 + n(4), -36 + n(4), -30 + n(5)), 15, 11)
    kidneys = (
        Ellipsoid(
            (-(vr + 52) + n(4), vy + 8 + n(3), -74 + n(6)),
            (24 * j(), 20 * j(), 52 * j()),
            (0.0, -10 + n(4), 25 + n(6)),
        ),
        Ellipsoid(
            (vr + 52 + n(4), vy + 6 + n(3), -56 + n(6)),
            (24 * j(), 20 * j(), 52 * j()),
            (0.0, 10 + n(4), -25 + n(6)),
        ),
    )
    pancreas = chain(
        [
            (-18, ay - 28, -62),
            (0, ay - 33, -50),
            (35, ay - 26, -42),
            (spleen_c[0] - 18, ay + 4, -28),
        ],
        [13, 10, 10, 8],
    )
    lungs = (
        Ellipsoid((-85, 18, r_top - 45 + 160), (74, 92, 160)),
        Ellipsoid(
            (85, 18, max(spleen_c[2] + spleen_r[2], stomach.centre[2] + 40) - 35 + 160),
            (74, 92, 160),
        ),
    )
    heart = Ellipsoid((22 + n(5), -28 + n(5), l_top + 52), (66, 50, 56), (0.0, 0.0, 30.0))

    def content() -> int:
        r = rng.uniform()
        return 8 if r < 0.5 else (10 if r < 0.8 else 9)  # BOWEL_GAS, BOWEL_STOOL, BOWEL_FLUID

    cx = inner_x - 26
    colon_pts: list[Vec3] = [
        (-cx, -5, -200),
        (-cx, -15, -95),
        (-72, -45, -78),
        (0, -(inner_front - 24), -100),
        (75, -40, -70),
        (cx - 4, 8, -38),
        (cx, 20, -200),
    ]
    colon_r = [24, 24, 22, 20, 20, 19, 18]
    colon = tuple((t, content()) for t in chain(colon_pts, colon_r))
    loops = []
    for _ in range(24):
        a = (u(-70, 70), u(-75, 15), u(-240, -95))
        d = rng.normal(size=3)
        d = d / np.linalg.norm(d) * u(25, 60)
        b = (a[0] + d[0], a[1] + d[1], a[2] + d[2])
        r = u(9, 13)
        loops.append((Tube(a, b, r, r), 9 if rng.uniform() < 0.6 else 10))
    duod = chain(
        [
            (-5, -36, -30),
            (-40, -14, -45),
            (-42, ay - 8, -72),
            (-8, ay - 4, -88),
            (25, ay - 10, -78),
        ],
        [10, 10, 10, 9, 9],
    )
    small_bowel = tuple(loops) + tuple((t, 9 if i % 2 == 0 else 10) for i, t in enumerate(duod))

    cc = caud.centre
    rc, lc = right.centre, left.centre
    hilum: Vec3 = (cc[0] - 16, cc[1] - 10, -12)
    confluence: Vec3 = (0, ay - 20, -48)
    pv_r = 7.5 if cirrhotic else 6.5
    portal_vein = (
        Tube(confluence, hilum, pv_r, pv_r * 0.95),
        Tube((spleen_c[0] - 20, ay + 12, -30), confluence, 4.5, 5.0),
    )
    rpv: Vec3 = (rc[0] + 12, rc[1] - 4, 0)
    lpv: Vec3 = (lc[0] - 18, lc[1] + 12, 6)
    portal_branches = (
        Tube(hilum, rpv, 6.0, 4.0),
        Tube(rpv, (rc[0] - 28, rc[1] - 42, 14), 3.5, 2.0),
        Tube(rpv, (rc[0] - 26, rc[1] + 40, -16), 3.5, 2.0),
        Tube(hilum, lpv, 5.0, 4.0),
        Tube(lpv, (lc[0] + 40, lc[1] + 2, 16), 3.5, 2.0),
    )
    conf: Vec3 = (ivc[0] + 2, ivc[1] - 2, r_top - 22)
    hepatic_veins = (
        Tube(conf, (rc[0] - 26, rc[1] + 8, rc[2] - 48), 6.0, 2.5),
        Tube(conf, (cc[0] - 30, lc[1] + 8, rc[2] - 62), 5.0, 2.0),
        Tube(conf, (lc[0] + 22, lc[1] + 6, lc[2] + 8), 4.5, 2.0),
    )
    bile_ducts = (Tube((hilum[0] - 3, hilum[1] - 7, hilum[2] - 3), (-16, ay - 22, -70), 3.0, 2.6),)
    intra_ducts = (
        Tube((hilum[0] - 3, hilum[1] - 7, hilum[2]), (rc[0] + 5, rc[1] - 12, 6), 1.6, 1.1),
        Tube((hilum[0] - 3, hilum[1] - 7, hilum[2]), (lc[0] - 10, lc[1] + 4, 10), 1.6, 1.1),
    )
    jitter = tuple(float(v) for v in rng.uniform(0.92, 1.08, size=40))
    fat_frac = float(rng.uniform(0.0, 0.05))
    if rng.uniform() < 0.2 and not cirrhotic:
        fat_frac = float(rng.uniform(0.08, 0.2))

    return BodyModel(
        seed=seed,
        cirrhotic=cirrhotic,
        ascites=ascites,
        shift=(u(-15, 15), u(-12, 12), u(-40, 40)),
        rotation_deg=u(-5, 5),
        skin=(bx, by),
        back_y=back,
        taper=(u(0.04, 0.1), u(0.0, 0.05), u(0.0, 0.06)),
        fat_mm=fat,
        muscle_mm=muscle,
        vertebra_y=vy,
        vertebra_r=vr,
        right_lobe=right,
        left_lobe=left,
        caudate=caud,
        lv_fissure_mm=lv_fissure,
        teres_fissure_mm=teres,
        nodularity_mm=nodularity,
        surface_noise=surface_noise,
        nodule_noise=nodule_noise,
        warp=warp,
        bowel_noise=bowel_noise,
        warp_mm=u(3, 9),
        septa=septa,
        disc_period=u(30, 34),
        disc_phase=u(0, 30),
        liver_fat=fat_frac,
        liver_t2_scale=t2_scale,
        gallbladder=gb,
        spleen=Ellipsoid(spleen_c, spleen_r, (0.0, 0.0, spleen_rz)),
        stomach=stomach,
        stomach_gas=u(0.15, 0.6),
        antrum=antrum,
        kidneys=kidneys,
        pancreas=pancreas,
        lungs=lungs,
        heart=heart,
        colon=colon,
        small_bowel=small_bowel,
        aorta=aorta,
        ivc=ivc,
        portal_vein=portal_vein,
        portal_branches=portal_branches,
        hepatic_veins=hepatic_veins,
        bile_ducts=bile_ducts,
        intra_ducts=intra_ducts,
        ascites_mm=float(drng.uniform(8, 22)) if ascites else 0.0,
        tissue_jitter=jitter,
    )
