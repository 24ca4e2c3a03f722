"""Sample the body model on a grid: a tissue label per voxel plus the liver's texture fields."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.phantoms.anatomy import BodyModel, Ellipsoid, Tube
from pipeline.phantoms.grid import SliceGrid
from pipeline.phantoms.shapes import (
    F32,
    Vec3,
    capsule,
    ellipse2d,
    ellipsoid_inside,
    ellipsoid_local,
    local,
    rotation,
    smooth_min,
)
from pipeline.phantoms.tissues import Tissue

U8 = npt.NDArray[np.uint8]
Block = tuple[slice, slice, slice]


@dataclass(frozen=True, eq=False)
class Painted:
    """Labels (``Tissue`` values) of every voxel of a grid, and two liver fields.

    ``nodules`` is a unit-variance field inside the liver (regenerative nodules, parenchymal
    texture), ``septa`` 0..1 fibrotic septa (zero in a normal liver); both are 0 outside the liver.
    """

    labels: U8
    nodules: F32
    septa: F32


class _Canvas:
    def __init__(self, model: BodyModel, grid: SliceGrid) -> None:
        px, py, pz = grid.axes()
        t = np.deg2rad(model.rotation_deg)
        c, s = np.cos(t), np.sin(t)
        dx, dy = px - model.shift[0], py - model.shift[1]
        self.x = (c * dx + s * dy).astype(np.float32)
        self.y = (-s * dx + c * dy).astype(np.float32)
        self.z = (pz - model.shift[2]).astype(np.float32)
        self.px, self.py, self.pz = (a.astype(np.float32) for a in (px, py, pz))
        self.shape = grid.shape
        self.labels = np.zeros(self.shape, np.uint8)

    def block(self, lo: Vec3, hi: Vec3) -> Block | None:
        mxy = (self.x >= lo[0]) & (self.x <= hi[0]) & (self.y >= lo[1]) & (self.y <= hi[1])
        mz = (self.z >= lo[2]) & (self.z <= hi[2])
        if not mxy.any() or not mz.any():
            return None
        out = []
        for d in range(3):
            if self.shape[d] == 1:
                out.append(slice(0, 1))
                continue
            src = mxy if mxy.shape[d] > 1 else mz
            other = tuple(a for a in range(3) if a != d)
            idx = np.flatnonzero(src.any(axis=other))
            out.append(slice(int(idx[0]), int(idx[-1]) + 1))
        return out[0], out[1], out[2]

    @staticmethod
    def sub(a: F32, sl: Block) -> F32:
        return a[tuple(s if a.shape[d] > 1 else slice(None) for d, s in enumerate(sl))]

    def coords(self, sl: Block) -> tuple[F32, F32, F32]:
        """Body-frame coordinates of a block."""
        return self.sub(self.x, sl), self.sub(self.y, sl), self.sub(self.z, sl)

    def pcoords(self, sl: Block) -> tuple[F32, F32, F32]:
        """Patient coordinates of a block (each varies along one array axis)."""
        return self.sub(self.px, sl), self.sub(self.py, sl), self.sub(self.pz, sl)

    def put(self, sl: Block, where: npt.NDArray[np.bool_], tissue: Tissue) -> None:
        np.copyto(self.labels[sl], np.uint8(tissue), where=where)


def _inside(cv: _Canvas, e: Ellipsoid, sl: Block, grow: float = 0.0) -> npt.NDArray[np.bool_]:
    x, y, z = cv.coords(sl)
    rot = rotation(*e.angles) if any(e.angles) else None
    return ellipsoid_inside(x, y, z, e.centre, e.radii, rot, grow)


def _in_cavity(cv: _Canvas, cavity: F32, sl: Block) -> npt.NDArray[np.bool_]:
    out: npt.NDArray[np.bool_] = cv.sub(cavity, sl) < 0
    return out


def _tube(cv: _Canvas, t: Tube, sl: Block) -> F32:
    x, y, z = cv.coords(sl)
    return capsule(x, y, z, t.a, t.b, t.ra, t.rb)


def _paint_tubes(
    cv: _Canvas, tubes: tuple[Tube, ...], tissue: Tissue, only: tuple[Tissue, ...] = ()
) -> None:
    for t in tubes:
        sl = cv.block(*t.bbox(1.0))
        if sl is None:
            continue
        inside = _tube(cv, t, sl) < 0
        if only:
            lab = cv.labels[sl]
            inside &= (lab >= min(only)) & (lab <= max(only))
        cv.put(sl, inside, tissue)


def _wall(cv: _Canvas, m: BodyModel) -> F32:
    """Paint skin fat, muscle and the abdominal cavity; return the cavity's distance (2D)."""
    chest, waist, bulge = (np.float32(v) for v in m.taper)
    z = cv.z
    fx = (
        1.0
        - chest * np.clip((z - 60.0) / 200.0, 0.0, 1.0)
        - waist * np.exp(-np.square((z + 110.0) / 70.0))
    )
    fy = 1.0 + bulge * np.exp(-np.square((z + 80.0) / 90.0))
    skin = ellipse2d(cv.x / fx, cv.y / fy, (0.0, 0.0), m.skin)
    skin = np.maximum(skin, cv.y - np.float32(m.back_y))
    full: Block = (slice(None), slice(None), slice(None))
    cv.put(full, skin < 0, Tissue.SUBCUT_FAT)
    cv.put(full, skin < -m.fat_mm, Tissue.MUSCLE)
    cavity: F32 = skin + np.float32(m.fat_mm + m.muscle_mm)
    cv.put(full, cavity < 0, Tissue.VISCERAL_FAT)
    vy, vr = m.vertebra_y, m.vertebra_r
    for side in (-1.0, 1.0):
        para = ellipse2d(cv.x, cv.y, (side * (vr + 20), vy + vr + 24), (25.0, 21.0))
        cv.put(full, para < 0, Tissue.MUSCLE)
        psoas = Tube((side * (vr + 8), vy - 2, -45), (side * (vr + 30), vy - 8, -260), 3.0, 26.0)
        _paint_tubes(cv, (psoas,), Tissue.MUSCLE)
    return cavity


def _liver(cv: _Canvas, m: BodyModel, cavity: F32) -> tuple[Block, F32, F32, F32, F32] | None:
    """Liver distance (clipped and raw) and lobe distances on the liver's block."""
    lo, hi = m.liver_bbox()
    pad = m.ascites_mm + 2 + 2.5 * m.warp_mm
    sl = cv.block((lo[0] - pad, lo[1] - pad, lo[2] - pad), (hi[0] + pad, hi[1] + pad, hi[2] + pad))
    if sl is None:
        return None
    x, y, z = cv.coords(sl)
    pc = cv.pcoords(sl)
    # smooth shape variation, anchored at the caudate lobe (which keeps its place by the IVC)
    amp = np.float32(m.warp_mm)
    anchor = tuple(np.full((1, 1, 1), v, np.float32) for v in m.to_patient(m.caudate.centre))
    x = x + amp * (m.warp[0](*pc) - m.warp[0](*anchor))
    y = y + amp * (m.warp[1](*pc) - m.warp[1](*anchor))
    r = m.right_lobe
    dx, dy, dz = local(x, y, z, r.centre)
    taper = 1.0 - 0.35 * np.clip(-dz / np.float32(r.radii[2]), 0.0, 1.0)
    s_r = ellipsoid_local(
        dx, dy, dz, r.radii[0] * taper, r.radii[1] * taper, np.float32(r.radii[2])
    )
    left = m.left_lobe
    dx, dy, dz = local(x, y, z, left.centre)
    tl = np.clip((dx + 20.0) / np.float32(left.radii[0] + 20.0), 0.0, 1.0)
    s_l = ellipsoid_local(
        dx,
        dy,
        dz,
        np.float32(left.radii[0]),
        left.radii[1] * (1.0 - 0.6 * tl),
        left.radii[2] * (1.0 - 0.45 * tl),
    )
    c = m.caudate
    cx, cy, cz = local(x, y, z, c.centre)
    s_c = ellipsoid_local(cx, cy, cz, *(np.float32(v) for v in c.radii))
    liver = smooth_min(smooth_min(s_r, s_l, 18.0), s_c, 8.0)
    if m.nodularity_mm > 0:
        bumps = np.sqrt(
            np.square(m.surface_noise(*cv.pcoords(sl))) + np.float32(0.05)
        ) - np.float32(0.82)
        liver = liver - np.float32(m.nodularity_mm) * bumps
    w = np.float32(m.lv_fissure_mm)
    fissure = np.maximum(
        np.maximum(np.abs(s_c - (w / 2 + 1.0)) - w / 2, cy - np.float32(0.25 * c.radii[1])),
        np.maximum(
            -(cx + np.float32(0.35 * c.radii[0])), np.abs(cz) - np.float32(0.9 * c.radii[2])
        ),
    )
    liver = np.maximum(liver, -fissure)
    wt = np.float32(m.teres_fissure_mm / 2)
    xt = np.float32(left.centre[0] - 8)
    teres = np.maximum(
        np.abs(x - xt) - wt,
        np.maximum(y - np.float32(left.centre[1] - 4), z - np.float32(left.centre[2] + 4)),
    )
    liver = np.maximum(liver, -teres)
    raw = liver
    liver = np.maximum(liver, cv.sub(cavity, sl) + np.float32(m.ascites_mm))
    return sl, liver, raw, s_c - np.minimum(s_r, s_l), s_l - s_r


def _ascites(cv: _Canvas, m: BodyModel, cavity: F32, sl: Block, raw: F32) -> None:
    t = np.float32(m.ascites_mm)
    near = (raw < t) & (cv.sub(cavity, sl) < 0)
    cv.put(sl, near, Tissue.ASCITES)
    sp = m.spleen
    bl = cv.block(*sp.bbox(m.ascites_mm))
    if bl is not None:
        around = _inside(cv, sp, bl, 0.7 * float(t)) & _in_cavity(cv, cavity, bl)
        cv.put(bl, around, Tissue.ASCITES)
    low = cv.block((-400, -400, -400), (400, 30, -105))
    if low is not None:
        gutter = (cv.sub(cavity, low) > -1.3 * t) & (cv.sub(cavity, low) < 0)
        cv.put(low, gutter, Tissue.ASCITES)


def _mesentery(cv: _Canvas, m: BodyModel, cavity: F32) -> None:
    """Small-bowel loops packed in mesenteric fat below the liver, in front of the spine."""
    r = m.right_lobe
    top = r.centre[2] - 0.6 * r.radii[2]
    sl = cv.block((-400.0, -400.0, -1e4), (400.0, m.vertebra_y - m.vertebra_r - 5, top))
    if sl is None:
        return
    _, y, z = cv.coords(sl)
    n = m.bowel_noise(*cv.pcoords(sl))
    # fade in below ``top`` so that the loops do not start at a flat plane
    n = n - np.clip((z - np.float32(top - 40.0)) / np.float32(40.0), 0.0, 1.0) * 2.0
    inside = _in_cavity(cv, cavity, sl) & (cv.labels[sl] == Tissue.VISCERAL_FAT)
    cv.put(sl, inside & (n > 0.25), Tissue.GI_WALL)
    cv.put(sl, inside & (n > 0.6), Tissue.BOWEL_FLUID)
    cv.put(sl, inside & (n > 0.6) & (y < np.float32(-20)) & (n < 0.75), Tissue.BOWEL_STOOL)


def _organs(cv: _Canvas, m: BodyModel, cavity: F32) -> None:
    _mesentery(cv, m, cavity)
    for tube, code in m.colon + m.small_bowel:
        sl = cv.block(*tube.bbox(1.0))
        if sl is None:
            continue
        d = _tube(cv, tube, sl)
        cv.put(sl, d < 0, Tissue.GI_WALL)
        cv.put(sl, d < -2.5, Tissue(code))
    st = m.stomach
    sl = cv.block(*st.bbox(1.0))
    if sl is not None:
        cav = _in_cavity(cv, cavity, sl)
        cv.put(sl, _inside(cv, st, sl) & cav, Tissue.GI_WALL)
        lumen = _inside(cv, st, sl, -4.0) & cav
        _, y, _ = cv.coords(sl)
        gas = y < np.float32(st.centre[1] - m.stomach_gas * st.radii[1])
        cv.put(sl, lumen & gas, Tissue.STOMACH_GAS)
        cv.put(sl, lumen & ~gas, Tissue.STOMACH_FLUID)
    _paint_tubes(cv, (m.antrum,), Tissue.GI_WALL)
    _paint_tubes(cv, m.pancreas, Tissue.PANCREAS)
    sp = m.spleen
    sl = cv.block(*sp.bbox(1.0))
    if sl is not None:
        cv.put(sl, _inside(cv, sp, sl) & _in_cavity(cv, cavity, sl), Tissue.SPLEEN)


def _kidneys(cv: _Canvas, m: BodyModel) -> None:
    for k in m.kidneys:
        sl = cv.block(*k.bbox(1.0))
        if sl is None:
            continue
        cv.put(sl, _inside(cv, k, sl, 4.0), Tissue.VISCERAL_FAT)  # perirenal fat
        kidney = _inside(cv, k, sl)
        cv.put(sl, kidney, Tissue.KIDNEY_CORTEX)
        cv.put(sl, _inside(cv, k, sl, -6.0), Tissue.KIDNEY_MEDULLA)
        medial = 12.0 if k.centre[0] < 0 else -12.0
        rot = rotation(*k.angles)
        x, y, z = cv.coords(sl)
        dx, dy, dz = local(x, y, z, k.centre, rot)
        sinus = ellipsoid_inside(dx, dy, dz, (medial, -6.0, 0.0), (11.0, 9.0, k.radii[2] * 0.5))
        cv.put(sl, kidney & sinus, Tissue.VISCERAL_FAT)


def _vessels_and_spine(cv: _Canvas, m: BodyModel) -> None:
    ix, iy, irx, iry, itop = m.ivc
    sl = cv.block((ix - irx - 1, iy - iry - 1, -1e4), (ix + irx + 1, iy + iry + 1, itop))
    if sl is not None:
        x, y, _ = cv.coords(sl)
        cv.put(sl, ellipse2d(x, y, (ix, iy), (irx, iry)) < 0, Tissue.IVC)
    ax, ay, ar = m.aorta
    sl = cv.block((ax - ar - 1, ay - ar - 1, -1e4), (ax + ar + 1, ay + ar + 1, 1e4))
    if sl is not None:
        x, y, _ = cv.coords(sl)
        cv.put(sl, ellipse2d(x, y, (ax, ay), (ar, ar)) < 0, Tissue.AORTA)
    _paint_tubes(cv, m.portal_vein, Tissue.PORTAL_VEIN)
    _paint_tubes(cv, m.bile_ducts, Tissue.BILE_DUCT)
    vy, vr = m.vertebra_y, m.vertebra_r
    sl = cv.block((-45, vy - vr - 2, -1e4), (45, vy + vr + 48, 1e4))
    if sl is None:
        return
    x, y, z = cv.coords(sl)
    body = ellipse2d(x, y, (0.0, vy), (vr * 1.15, vr))
    disc = np.mod(z - np.float32(m.disc_phase), np.float32(m.disc_period)) < 8.0
    cv.put(sl, body < 0, Tissue.CORTICAL_BONE)
    cv.put(sl, (body < -1.5) & ~disc, Tissue.MARROW)
    cv.put(sl, (body < 0) & disc, Tissue.DISC)
    canal_y = vy + vr + 10
    cv.put(sl, ellipse2d(x, y, (0.0, canal_y), (14.0, 13.0)) < 0, Tissue.CORTICAL_BONE)
    cv.put(sl, ellipse2d(x, y, (0.0, vy + vr + 32), (5.0, 13.0)) < 0, Tissue.CORTICAL_BONE)
    cv.put(sl, ellipse2d(x, y, (0.0, canal_y), (8.5, 8.0)) < 0, Tissue.CSF)
    cv.put(sl, ellipse2d(x, y, (0.0, canal_y), (5.0, 4.0)) < 0, Tissue.SPINAL_CORD)


def paint(model: BodyModel, grid: SliceGrid) -> Painted:
    """Label every voxel of ``grid`` with its tissue; later structures cover earlier ones."""
    cv = _Canvas(model, grid)
    cavity = _wall(cv, model)
    for lung in model.lungs:
        sl = cv.block(*lung.bbox(1.0))
        if sl is not None:
            cv.put(sl, _inside(cv, lung, sl) & _in_cavity(cv, cavity, sl), Tissue.LUNG)
    h = model.heart
    sl = cv.block(*h.bbox(1.0))
    if sl is not None:
        cv.put(sl, _inside(cv, h, sl), Tissue.MYOCARDIUM)
        inner = Ellipsoid(
            h.centre, (h.radii[0] * 0.72, h.radii[1] * 0.72, h.radii[2] * 0.72), h.angles
        )
        cv.put(sl, _inside(cv, inner, sl), Tissue.HEART_BLOOD)
    liver = _liver(cv, model, cavity)
    if liver is not None and model.ascites:
        _ascites(cv, model, cavity, liver[0], liver[2])
    _organs(cv, model, cavity)
    nodules = np.zeros(cv.shape, np.float32)
    septa = np.zeros(cv.shape, np.float32)
    if liver is not None:
        sl, d, _, caud_vs, left_vs = liver
        inside = d < 0
        lobe = np.where(
            caud_vs < 0,
            np.uint8(Tissue.CAUDATE),
            np.where(left_vs < 0, np.uint8(Tissue.LIVER_LEFT), np.uint8(Tissue.LIVER_RIGHT)),
        )
        np.copyto(cv.labels[sl], lobe, where=inside)
        field = model.nodule_noise(*cv.pcoords(sl))
        np.copyto(nodules[sl], field, where=inside)
        if model.septa > 0:
            sep = np.exp(-np.square(field * np.float32(5.0))) * np.float32(model.septa)
            np.copyto(septa[sl], sep, where=inside)
    liver_codes = (Tissue.LIVER_RIGHT, Tissue.LIVER_LEFT, Tissue.CAUDATE)
    _paint_tubes(cv, model.hepatic_veins, Tissue.HEPATIC_VEIN, liver_codes)
    _paint_tubes(cv, model.portal_branches, Tissue.PORTAL_BRANCH, liver_codes)
    _paint_tubes(cv, model.intra_ducts, Tissue.BILE_DUCT_INTRA, liver_codes)
    _kidneys(cv, model)
    gb = model.gallbladder
    sl2 = cv.block(*gb.bbox(1.0))
    if sl2 is not None:
        cv.put(sl2, _inside(cv, gb, sl2), Tissue.GALLBLADDER)
    _vessels_and_spine(cv, model)
    return Painted(cv.labels, nodules, septa)
