"""Generate a phantom liver MRI study (DICOM files) or an axial T2 volume in memory."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian

from pipeline.input_distribution import AcquisitionValues
from pipeline.phantoms.acquisition import Stack, acquire, adc_from_dwi, plan, stream
from pipeline.phantoms.anatomy import body_model
from pipeline.phantoms.headers import (
    _AGENTS,
    instance,
    manufacturer_of,
    series_template,
    study_context,
    uid,
)
from pipeline.phantoms.protocols import DYNAMIC_PHASES, protocol, series_numbers, with_number
from pipeline.phantoms.truth import target_truth
from pipeline.phantoms.types import (
    ALL_ROLES,
    TARGET_ROLES,
    VENDORS,
    PhantomSeries,
    PhantomStudy,
    PhantomVolume,
    Vendor,
)
from pipeline.phantoms.writer import SeriesWriter, ds_str

logger = logging.getLogger(__name__)

_DURATION_S = {
    "localizer": 25,
    "cor_t2": 40,
    "ax_t2": 45,
    "ax_t2_fs": 240,
    "t1_in_opp": 20,
    "t2star": 20,
    "mrcp": 15,
    "dwi": 210,
    "adc": 0,
    "dyn_pre": 18,
    "dyn_arterial": 18,
    "dyn_portal": 18,
    "dyn_delayed": 18,
}
# Seconds after the pre-contrast scan at which each dynamic phase starts (injection at +40 s).
_DYNAMIC_DELAY_S = {"dyn_pre": 0, "dyn_arterial": 60, "dyn_portal": 110, "dyn_delayed": 220}
_INJECTION_S = 40


def _check(
    vendor: str, roles: Sequence[str] | None, slices: int, matrix: int, seed: int
) -> tuple[str, ...]:
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, not {seed}")
    if vendor not in VENDORS:
        raise ValueError(f"unknown vendor {vendor!r}; choose from {', '.join(VENDORS)}")
    if slices < 1 or slices > 400:
        raise ValueError(f"axial_t2_slices must be 1..400, not {slices}")
    if matrix < 16 or matrix > 1024:
        raise ValueError(f"matrix must be 16..1024, not {matrix}")
    chosen = tuple(ALL_ROLES) if roles is None else tuple(roles)
    unknown = [r for r in chosen if r not in ALL_ROLES]
    if unknown or not chosen:
        raise ValueError(
            f"unknown or no series roles {unknown}; choose from {', '.join(ALL_ROLES)}"
        )
    if "adc" in chosen and "dwi" not in chosen:
        raise ValueError("the ADC series is derived from the DWI series: add 'dwi' to the roles")
    return tuple(r for r in ALL_ROLES if r in chosen)  # acquisition order, no duplicates


def _ascites(ascites: bool | None, cirrhotic: bool, seed: int) -> bool:
    if ascites is not None:
        return ascites
    return cirrhotic and bool(stream(seed, "ascites").uniform() < 0.4)


def _instance_order(vendor: str, role: str, stacks: list[Stack]) -> list[tuple[int, int]]:
    """(stack, slice) pairs in InstanceNumber order, as each vendor numbers them.

    Axial stacks: Siemens feet to head, GE and Philips head to feet; coronal: Philips posterior
    to anterior, the others anterior to posterior. Several volumes (echoes, b-values): Siemens and
    GE interleave them slice by slice, Philips writes one volume after the other.
    """
    n = stacks[0].grid.shape[0]
    normal = stacks[0].grid.normal
    axial = abs(normal[2]) > 0.9
    descending = vendor in ("ge", "philips") if axial else vendor == "philips"
    slices = list(range(n))[::-1] if descending else list(range(n))
    if role == "localizer":
        return [(s, k) for s in range(len(stacks)) for k in range(stacks[s].grid.shape[0])]
    if len(stacks) == 1:
        return [(0, k) for k in slices]
    if vendor == "philips" or (role == "dwi" and vendor == "siemens"):
        return [(s, k) for s in range(len(stacks)) for k in slices]
    return [(s, k) for k in slices for s in range(len(stacks))]


def _folder(number: int, description: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", description).strip("_") or "series"
    return f"{number:04d}_{clean}"


def generate_study(
    out_dir: Path,
    *,
    cirrhotic: bool,
    vendor: Vendor = "siemens",
    seed: int = 0,
    roles: Sequence[str] | None = None,
    axial_t2_slices: int = 36,
    matrix: int = 256,
    ascites: bool | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> PhantomStudy:
    """Write a synthetic multi-series liver MRI study as DICOM Part 10 files (MR Image Storage).

    Parameters
    ----------
    out_dir
        Folder to write into; each series goes to ``out_dir/<NNNN_description>/<n>.dcm`` with
        ``n`` its InstanceNumber.
    cirrhotic
        Cirrhotic liver (nodular surface, caudate hypertrophy, right-lobe atrophy, septa,
        splenomegaly) or a normal one.
    vendor
        Naming, numbering and header style: ``siemens``, ``ge`` or ``philips``.
    seed
        Everything (anatomy, acquisition, UIDs) is a function of the arguments: the same
        arguments give the same bytes.
    roles
        Series to write (see ``ALL_ROLES``), default all of them. The target series is
        ``ax_t2`` when present, else ``ax_t2_fs``, else there is none.
    axial_t2_slices, matrix
        Slices and rows/columns of the axial T2 series; other series scale with ``matrix``.
    ascites
        Free fluid around liver and spleen; None draws it from the seed for cirrhotic studies
        (40 %) and leaves normal studies dry.
    transfer_syntax
        Explicit (default) or Implicit VR Little Endian, Deflated, RLE Lossless, JPEG-LS
        Lossless, JPEG 2000 Lossless or JPEG Lossless SV1.

    Returns
    -------
    PhantomStudy
        The written series and the ground truth of the target series.
    """
    chosen = _check(vendor, roles, axial_t2_slices, matrix, seed)
    asc = _ascites(ascites, cirrhotic, seed)
    key = (seed, vendor, int(cirrhotic), int(asc), axial_t2_slices, matrix)
    model = body_model(seed, cirrhotic=cirrhotic, ascites=asc)
    geo = plan(model, axial_t2_slices, matrix, stream(seed, "geometry", matrix, axial_t2_slices))
    hdr_rng = stream(seed, "header", VENDORS.index(vendor))
    field_t = 3.0 if hdr_rng.uniform() < 0.3 else 1.5
    has_contrast = any(r in DYNAMIC_PHASES and r != "dyn_pre" for r in chosen)
    ctx = study_context(vendor, key, seed, hdr_rng, field_t, has_contrast)
    agent = str(hdr_rng.choice(_AGENTS))
    numbers = series_numbers(vendor, chosen)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clock = ctx.start + timedelta(seconds=int(hdr_rng.integers(60, 240)))
    dyn_start = None
    written: list[PhantomSeries] = []
    acquired: dict[str, list[Stack]] = {}
    for role in chosen:
        rng = stream(seed, "series", vendor, int(cirrhotic), int(asc), role)
        proto = with_number(protocol(vendor, role, field_t, geo.axial.rows, rng), numbers[role])
        if role == "adc":
            stacks = [adc_from_dwi(acquired["dwi"])]
        else:
            stacks = acquire(model, geo, proto, rng)
        acquired[role] = stacks
        if role in DYNAMIC_PHASES:
            dyn_start = dyn_start or clock
            t0 = dyn_start + timedelta(seconds=_DYNAMIC_DELAY_S[role])
        else:
            t0 = clock
        injection = dyn_start + timedelta(seconds=_INJECTION_S) if dyn_start else None
        clock = max(clock, t0) + timedelta(seconds=_DURATION_S[role] + 20)
        series_uid = uid(*key, "series", role)
        order = _instance_order(vendor, role, stacks)
        allpix = np.concatenate(
            [s.pixels.reshape(-1)[:: 1 + s.pixels.size // 40_000] for s in stacks]
        )
        lo, hi = np.percentile(allpix, [1, 99.5])
        window = ((lo + hi) / 2, max(hi - lo, 1.0))
        template = series_template(
            ctx, proto, stacks[0], series_uid, t0, window, len(order), injection, agent
        )
        writer = SeriesWriter(template, transfer_syntax)
        folder = out_dir / _folder(proto.series_number, proto.description)
        folder.mkdir(exist_ok=True)
        files = []
        per_image = _DURATION_S[role] / max(len(order), 1)
        for number, (s, k) in enumerate(order, start=1):
            stack = stacks[s]
            when = t0 + timedelta(seconds=per_image * (number - 1))
            inst = instance(ctx, proto, stack, k, number, series_uid, when)
            path = folder / f"{number}.dcm"
            writer.write(path, inst, stack.pixels[k])
            files.append(path)
        written.append(PhantomSeries(series_uid, role, proto.description, tuple(files)))
        logger.debug("phantom series %s (%s): %d files", series_uid, role, len(files))
    target = next((r for r in TARGET_ROLES if r in chosen), None)
    mask = caudate = extent = volume = None
    target_uid = None
    if target is not None:
        truth = target_truth(model, geo, target)
        mask, caudate, extent, volume = (
            truth.mask,
            truth.caudate_index,
            truth.extent,
            truth.volume_ml,
        )
        target_uid = next(s.series_instance_uid for s in written if s.role == target)
    logger.info("phantom study %s: %d series, target %s", ctx.study_uid, len(written), target_uid)
    return PhantomStudy(
        path=out_dir,
        study_instance_uid=ctx.study_uid,
        vendor=vendor,
        cirrhotic=cirrhotic,
        ascites=asc,
        seed=seed,
        series=tuple(written),
        target_series_uid=target_uid,
        liver_mask=mask,
        caudate_index=caudate,
        liver_extent=extent,
        liver_volume_ml=volume,
    )


def phantom_axial_t2(
    *,
    cirrhotic: bool,
    seed: int,
    slices: int = 36,
    matrix: int = 256,
    vendor: Vendor = "siemens",
    ascites: bool | None = None,
    fat_suppressed: bool = False,
) -> PhantomVolume:
    """The target axial T2 of :func:`generate_study` in memory, without writing DICOM.

    The image equals the pixel data of that study's ``ax_t2`` series (``ax_t2_fs`` when
    ``fat_suppressed``) for the same arguments, sorted ascending along the normal (feet to head).

    Parameters
    ----------
    cirrhotic, seed, slices, matrix, vendor, ascites
        As for :func:`generate_study` (``slices`` is ``axial_t2_slices``).
    fat_suppressed
        Return the fat-suppressed TSE (like the CHAOS T2-SPIR data) instead of the single-shot
        T2 without fat suppression.
    """
    _check(vendor, None, slices, matrix, seed)
    asc = _ascites(ascites, cirrhotic, seed)
    role = "ax_t2_fs" if fat_suppressed else "ax_t2"
    model = body_model(seed, cirrhotic=cirrhotic, ascites=asc)
    geo = plan(model, slices, matrix, stream(seed, "geometry", matrix, slices))
    field_t = 3.0 if stream(seed, "header", VENDORS.index(vendor)).uniform() < 0.3 else 1.5
    rng = stream(seed, "series", vendor, int(cirrhotic), int(asc), role)
    proto = protocol(vendor, role, field_t, geo.axial.rows, rng)
    stack = acquire(model, geo, proto, rng)[0]
    truth = target_truth(model, geo, role)
    contrast = proto.contrasts[0]
    acquisition = AcquisitionValues(
        source="phantom",
        manufacturer=manufacturer_of(vendor),
        field_strength_t=field_t,
        echo_time_ms=float(ds_str(contrast.te)),
        repetition_time_ms=float(ds_str(contrast.tr)),
        pixel_spacing_mm=(
            float(ds_str(truth.grid.pixel_spacing[0])),
            float(ds_str(truth.grid.pixel_spacing[1])),
        ),
        rows=truth.grid.rows,
        columns=truth.grid.columns,
    )
    return PhantomVolume(
        image=stack.pixels.astype(np.float32),
        liver_mask=truth.mask,
        caudate_index=truth.caudate_index,
        liver_extent=truth.extent if truth.extent is not None else (0, -1),
        pixel_spacing=truth.grid.pixel_spacing,
        slice_spacing=truth.grid.spacing,
        cirrhotic=cirrhotic,
        liver_volume_ml=truth.volume_ml,
        fat_suppressed=fat_suppressed,
        acquisition=acquisition,
    )
