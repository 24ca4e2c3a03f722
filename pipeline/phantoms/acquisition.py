"""Where each series of an exam looks (grids) and what it sees (stored pixel values per slice)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipeline.phantoms.anatomy import BodyModel
from pipeline.phantoms.contrast import (
    Contrast,
    add_noise,
    bias_field,
    lookup,
    render,
    to_stored,
)
from pipeline.phantoms.grid import AXIAL, CORONAL, SAGITTAL, SliceGrid, make_grid
from pipeline.phantoms.painter import Painted, paint
from pipeline.phantoms.protocols import Protocol
from pipeline.phantoms.shapes import F32
from pipeline.phantoms.tissues import Tissue

U16 = npt.NDArray[np.uint16]


def stream(*keys: int | str) -> np.random.Generator:
    """An independent random stream for one purpose (same keys, same numbers)."""
    ints = [
        k
        if isinstance(k, int)
        else int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "little")
        for k in keys
    ]
    return np.random.default_rng(np.random.SeedSequence(ints))


def crop_rows(grid: SliceGrid, rows: int) -> tuple[SliceGrid, int]:
    """The centred ``rows`` rows of a grid (rectangular field of view, same pixels)."""
    r0 = (grid.rows - rows) // 2
    shift = r0 * grid.pixel_spacing[0] * np.asarray(grid.column_cosine)
    return (
        SliceGrid(
            grid.row_cosine,
            grid.column_cosine,
            np.round(grid.positions + shift, 4),
            rows,
            grid.columns,
            grid.pixel_spacing,
            grid.thickness,
            grid.spacing,
        ),
        r0,
    )


def axial_spacing(slices: int) -> tuple[float, float]:
    """(spacing, thickness) in mm so that ``slices`` slices cover about 250 mm."""
    spacing = float(np.clip(round(250.0 / max(slices, 1) * 2) / 2, 3.0, 10.0))
    return spacing, round(spacing * 0.85 * 2) / 2


@dataclass
class Geometry:
    """Every grid of an exam; crops share the labels painted on their parent."""

    axial: SliceGrid
    fs_rows: int
    gre_rows: int
    dwi: SliceGrid
    dynamic: SliceGrid
    coronal: SliceGrid
    localizers: tuple[SliceGrid, SliceGrid, SliceGrid]
    mrcp: SliceGrid
    mrcp_planes: SliceGrid
    painted: dict[str, Painted] = field(default_factory=dict)


def plan(model: BodyModel, slices: int, matrix: int, rng: np.random.Generator) -> Geometry:
    """Place the grids the way a technologist would: centred on the trunk and the liver."""
    cx, cy, _ = model.shift
    lz = model.liver_centre[2]
    bx = model.skin[0]
    fov = float(np.clip(round((2 * bx + rng.uniform(30, 70)) / 10) * 10, 340, 440))
    spacing, thick = axial_spacing(slices)
    centre = (cx + rng.normal(0, 4), cy - 8 + rng.normal(0, 4), lz + rng.normal(0, 8))
    axial = make_grid(
        AXIAL,
        centre,
        rows=matrix,
        columns=matrix,
        fov_rows=fov,
        fov_columns=fov,
        slices=slices,
        spacing=spacing,
        thickness=thick,
    )
    half = max(8, matrix // 2)
    dwi = SliceGrid(
        axial.row_cosine,
        axial.column_cosine,
        axial.positions,
        half,
        half,
        (round(fov / half, 6), round(fov / half, 6)),
        axial.thickness,
        axial.spacing,
    )
    dyn_cols = max(16, round(matrix * 1.0))
    dyn_rows = max(12, round(dyn_cols * 0.75 / 2) * 2)
    dynamic = make_grid(
        AXIAL,
        (centre[0], centre[1], lz + rng.normal(0, 5)),
        rows=dyn_rows,
        columns=dyn_cols,
        fov_rows=fov * dyn_rows / dyn_cols,
        fov_columns=fov,
        slices=48,
        spacing=4.0,
        thickness=4.0,
    )
    cfov = float(round(fov / 10) * 10 + 20)
    coronal = make_grid(
        CORONAL,
        (cx, cy - 5 + rng.normal(0, 4), lz - 20),
        rows=matrix,
        columns=matrix,
        fov_rows=cfov,
        fov_columns=cfov,
        slices=24,
        spacing=7.0,
        thickness=6.0,
    )
    lm = max(16, matrix)
    loc_c = (cx, cy, lz)
    locs = (
        make_grid(
            SAGITTAL,
            loc_c,
            rows=lm,
            columns=lm,
            fov_rows=450,
            fov_columns=450,
            slices=3,
            spacing=25.0,
            thickness=8.0,
        ),
        make_grid(
            CORONAL,
            loc_c,
            rows=lm,
            columns=lm,
            fov_rows=450,
            fov_columns=450,
            slices=3,
            spacing=25.0,
            thickness=8.0,
        ),
        make_grid(
            AXIAL,
            loc_c,
            rows=lm,
            columns=lm,
            fov_rows=450,
            fov_columns=450,
            slices=3,
            spacing=25.0,
            thickness=8.0,
        ),
    )
    duct = model.to_patient(model.bile_ducts[0].a)
    mrcp = make_grid(
        CORONAL,
        (duct[0] + 15, duct[1] + 10, duct[2] - 20),
        rows=matrix,
        columns=matrix,
        fov_rows=300,
        fov_columns=300,
        slices=1,
        spacing=40.0,
        thickness=40.0,
    )
    planes = mrcp.slab(np.linspace(-17.5, 17.5, 8))
    return Geometry(
        axial=axial,
        fs_rows=max(8, round(matrix * 0.8 / 2) * 2),
        gre_rows=max(8, round(matrix * 0.75 / 2) * 2),
        dwi=dwi,
        dynamic=dynamic,
        coronal=coronal,
        localizers=locs,
        mrcp=mrcp,
        mrcp_planes=planes,
    )


def painted_for(model: BodyModel, geo: Geometry, name: str) -> Painted:
    """Labels of one named grid of the plan, painted once per exam."""
    if name not in geo.painted:
        grid = {
            "axial": geo.axial,
            "dwi": geo.dwi,
            "dynamic": geo.dynamic,
            "coronal": geo.coronal,
            "mrcp": geo.mrcp_planes,
            "loc0": geo.localizers[0],
            "loc1": geo.localizers[1],
            "loc2": geo.localizers[2],
        }[name]
        geo.painted[name] = paint(model, grid)
    return geo.painted[name]


def crop_painted(p: Painted, r0: int, rows: int) -> Painted:
    sl = slice(r0, r0 + rows)
    return Painted(p.labels[:, sl], p.nodules[:, sl], p.septa[:, sl])


@dataclass(frozen=True)
class Stack:
    """One volume of a series on one grid: stored values, slices ascending along the normal."""

    grid: SliceGrid
    pixels: U16
    contrast: Contrast
    volume_index: int  # echo (0, 1), b-value index, or 0


def _liver_signal(model: BodyModel, c: Contrast) -> float:
    water, fat = lookup(model, c)
    return float(water[Tissue.LIVER_RIGHT] + fat[Tissue.LIVER_RIGHT]) or 0.05


def image(
    model: BodyModel,
    painted: Painted,
    c: Contrast,
    sigma: float,
    shading: F32,
    rng: np.random.Generator,
) -> F32:
    """Magnitude image with coil shading and Rician noise of ``sigma``."""
    img = render(model, painted, c)
    img *= shading
    return add_noise(img, sigma, rng)


def _shading(model: BodyModel, grid: SliceGrid, rng: np.random.Generator) -> F32:
    x, y, z = (a.astype(np.float32) for a in grid.axes())
    return bias_field((x, y, z), model.to_patient((0.0, 0.0, 0.0)), rng)


def acquire(
    model: BodyModel, geo: Geometry, proto: Protocol, rng: np.random.Generator
) -> list[Stack]:
    """All volumes of one series as stored values (12-bit); not the derived ADC.

    Noise sigma is the liver signal of the first volume over the protocol's SNR; all volumes of
    a series share the coil shading and the scale to stored values.
    """
    role = proto.role
    top = float(rng.uniform(1200, 3800))
    sigma = _liver_signal(model, proto.contrasts[0]) / proto.snr
    if role in ("ax_t2", "ax_t2_fs", "t1_in_opp", "t2star"):
        rows = {"ax_t2": geo.axial.rows, "ax_t2_fs": geo.fs_rows}.get(role, geo.gre_rows)
        grid, r0 = crop_rows(geo.axial, rows)
        painted = crop_painted(painted_for(model, geo, "axial"), r0, rows)
    elif role == "dwi":
        grid, painted = geo.dwi, painted_for(model, geo, "dwi")
    elif role.startswith("dyn_"):
        grid, painted = geo.dynamic, painted_for(model, geo, "dynamic")
    elif role == "cor_t2":
        grid, painted = geo.coronal, painted_for(model, geo, "coronal")
    elif role == "mrcp":
        planes = image(
            model,
            painted_for(model, geo, "mrcp"),
            proto.contrasts[0],
            sigma / 3,
            _shading(model, geo.mrcp_planes, rng),
            rng,
        )
        slab = planes.mean(axis=0, keepdims=True)
        return [Stack(geo.mrcp, to_stored(slab, top)[0], proto.contrasts[0], 0)]
    elif role == "localizer":
        out = []
        for i, g in enumerate(geo.localizers):
            img = image(
                model,
                painted_for(model, geo, f"loc{i}"),
                proto.contrasts[0],
                sigma,
                _shading(model, g, rng),
                rng,
            )
            out.append(Stack(g, to_stored(img, top)[0], proto.contrasts[0], i))
        return out
    else:
        raise ValueError(f"no acquisition for role {role!r}")
    shading = _shading(model, grid, rng)
    imgs = [image(model, painted, c, sigma, shading, rng) for c in proto.contrasts]
    # one scale for all volumes of a series (echoes / b-values stay comparable)
    _, scale = to_stored(imgs[0] if role != "t1_in_opp" else imgs[1], top)
    return [
        Stack(grid, np.clip(im * np.float32(scale) + 0.5, 0, 4095).astype(np.uint16), c, i)
        for i, (im, c) in enumerate(zip(imgs, proto.contrasts, strict=True))
    ]


def adc_from_dwi(dwi: list[Stack]) -> Stack:
    """ADC map (1e-6 mm2/s) fitted log-linearly to the stored trace images of a DWI series.

    Background (b-lowest below 5 noise sigmas, sigma from the image corners) is set to 0, as
    scanners do.
    """
    b = np.asarray([s.contrast.b_value for s in dwi], np.float32)
    bc = b - b.mean()
    logs = [np.log(np.maximum(s.pixels.astype(np.float32), np.float32(0.5))) for s in dwi]
    mean_log = sum(logs[1:], logs[0]) / np.float32(len(logs))
    slope = sum(
        (np.float32(bc[i]) * (logs[i] - mean_log) for i in range(1, len(b))),
        np.float32(bc[0]) * (logs[0] - mean_log),
    ) / np.float32((bc * bc).sum())
    adc = np.clip(-slope * np.float32(1e6), 0, 4095)
    low = dwi[int(np.argmin(b))].pixels
    c = max(2, low.shape[1] // 16)
    corners = np.concatenate(
        [low[:, :c, :c], low[:, :c, -c:], low[:, -c:, :c], low[:, -c:, -c:]], axis=None
    )
    sigma = max(float(np.median(corners)) / 1.2533, 1.0)  # Rayleigh mean = sigma sqrt(pi / 2)
    adc[low < 5.0 * sigma] = 0
    return Stack(dwi[0].grid, (adc + 0.5).astype(np.uint16), dwi[0].contrast, 0)
