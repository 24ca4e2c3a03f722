"""What the selector knows about one series: values read from its headers, vendor-neutral."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pipeline.selection.rules import Thresholds
from pipeline.study_headers import SeriesHeaders, header_value

logger = logging.getLogger(__name__)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image Storage
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
    }
)
AXES = ("sagittal", "coronal", "axial")  # plane whose normal is x, y, z (patient LPS)
AXIS_NAMES = ("x", "y", "z")

# Vendor private b-value elements: (group, private creator, element offset)
_PRIVATE_B_VALUES = (
    (0x0019, "SIEMENS MR HEADER", 0x0C),  # B_value (IS)
    (0x0043, "GEMS_PARM_01", 0x39),  # slop_int_6..9: first value is the b-value (+1e9 flag)
    (0x2001, "Philips Imaging DD 001", 0x03),  # Diffusion B-Factor (FL)
)
_PRIVATE_GROUPS = frozenset(group for group, _, _ in _PRIVATE_B_VALUES)


@dataclass(frozen=True)
class Orientation:
    """The plane of an image: the axis its normal is closest to and the angle to that axis."""

    plane: str  # axial, coronal, sagittal, or oblique
    axis: str  # x, y or z: the dominant axis of the normal
    angle_deg: float  # between the normal and that axis


@dataclass(frozen=True)
class SeriesFeatures:
    """Header values of one series that the selection checks read.

    Text fields are lower-case with '_' read as a space; numbers are the most common value
    across the series' images (ms, mm); tuples hold the distinct values seen.
    """

    series_instance_uid: str
    series_number: int | None
    description: str  # SeriesDescription as written
    texts: dict[str, str]  # description / protocol / sequence, normalised for keyword matching
    modality: str
    sop_classes: tuple[str, ...]
    image_type: tuple[str, ...]  # every value seen, upper-case
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    scan_options: tuple[str, ...]
    mr_acquisition_type: str
    echo_time: float | None
    echo_times: tuple[float, ...]
    repetition_time: float | None
    inversion_time: float | None
    flip_angle: float | None
    echo_train_length: int | None
    slice_thickness: float | None
    b_values: tuple[float, ...]
    contrast_agent: str
    orientation: Orientation | None  # of the first image with an orientation
    planes: tuple[str, ...]  # distinct planes of all images
    n_images: int
    n_positions: int  # distinct slice positions along the normal
    slice_spacing: float | None  # median gap between positions, mm
    regular_stack: bool
    stack_note: str  # why the stack is (ir)regular


def normalise_text(value: object) -> str:
    """Lower-case, '_' as a space, runs of spaces collapsed: "T2W_SSh_TSE" -> "t2w ssh tse"."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        value = " ".join(str(v) for v in value)
    return " ".join(str(value).replace("_", " ").lower().split())


def orientation_of(iop: Sequence[float], max_angle_deg: float) -> Orientation | None:
    """Classify ImageOrientationPatient by the dominant axis of the slice normal.

    The normal (row x column cosine) is compared with the patient axes (PS3.3 C.7.6.2.1.1):
    within ``max_angle_deg`` of z it is axial, of y coronal, of x sagittal; otherwise oblique.
    Returns None for a malformed orientation.
    """
    try:
        values = [float(v) for v in iop]
    except (TypeError, ValueError):
        return None
    if len(values) != 6:
        return None
    normal = np.cross(np.asarray(values[:3]), np.asarray(values[3:]))
    length = float(np.linalg.norm(normal))
    if not math.isfinite(length) or length < 1e-6:
        return None
    normal = np.abs(normal / length)
    axis = int(np.argmax(normal))
    angle = math.degrees(math.acos(min(1.0, float(normal[axis]))))
    plane = AXES[axis] if angle <= max_angle_deg else "oblique"
    return Orientation(plane, AXIS_NAMES[axis], round(angle, 1))


def series_features(series: SeriesHeaders, thresholds: Thresholds) -> SeriesFeatures:
    """Read what the checks need from the headers of one series.

    Parameters
    ----------
    series
        The series' headers (no pixel data needed).
    thresholds
        Supplies the orientation angle tolerance and the slice-gap tolerance.
    """
    headers = series.headers
    max_angle_deg = thresholds.axial_max_angle_deg
    first = headers[0]
    iops = [header_value(h, "ImageOrientationPatient") for h in headers]
    orientations = [orientation_of(iop, max_angle_deg) for iop in iops if iop is not None]
    known = [o for o in orientations if o is not None]
    echo_times = _numbers(headers, "EchoTime")
    n_positions, spacing, regular, note = _stack(headers, thresholds.stack_tolerance)
    return SeriesFeatures(
        series_instance_uid=series.series_instance_uid,
        series_number=series.series_number,
        description=series.description,
        texts={
            "description": normalise_text(series.description),
            "protocol": normalise_text(header_value(first, "ProtocolName")),
            "sequence": normalise_text(
                [header_value(first, k) or "" for k in ("SequenceName", "PulseSequenceName")]
            ),
        },
        modality=_mode_text(headers, "Modality"),
        sop_classes=tuple(sorted({str(header_value(h, "SOPClassUID") or "") for h in headers})),
        image_type=_values(headers, "ImageType"),
        scanning_sequence=_values(headers, "ScanningSequence"),
        sequence_variant=_values(headers, "SequenceVariant"),
        scan_options=_values(headers, "ScanOptions"),
        mr_acquisition_type=_mode_text(headers, "MRAcquisitionType").upper(),
        echo_time=_mode(echo_times),
        echo_times=tuple(sorted(set(echo_times))),
        repetition_time=_mode(_numbers(headers, "RepetitionTime")),
        inversion_time=_mode(_numbers(headers, "InversionTime")),
        flip_angle=_mode(_numbers(headers, "FlipAngle")),
        echo_train_length=_int(_mode(_numbers(headers, "EchoTrainLength"))),
        slice_thickness=_mode(_numbers(headers, "SliceThickness")),
        b_values=tuple(sorted({b for h in headers for b in _b_values(h)})),
        contrast_agent=_mode_text(headers, "ContrastBolusAgent"),
        orientation=known[0] if known else None,
        planes=tuple(sorted({o.plane for o in known})),
        n_images=len(headers),
        n_positions=n_positions,
        slice_spacing=spacing,
        regular_stack=regular,
        stack_note=note,
    )


def _values(headers: Iterable[Dataset], keyword: str) -> tuple[str, ...]:
    """Every distinct value of a (multi-valued) code string attribute, upper-case, in order."""
    seen: dict[str, None] = {}
    for header in headers:
        value = header_value(header, keyword)
        if value is None or value == "":
            continue
        items = value if isinstance(value, MultiValue | list | tuple) else [value]
        for item in items:
            text = str(item).strip().upper()
            if text:
                seen.setdefault(text, None)
    return tuple(seen)


def _mode_text(headers: Iterable[Dataset], keyword: str) -> str:
    counts = Counter(str(header_value(h, keyword) or "").strip() for h in headers)
    return counts.most_common(1)[0][0] if counts else ""


def _numbers(headers: Iterable[Dataset], keyword: str) -> list[float]:
    out = []
    for header in headers:
        number = _number(header_value(header, keyword))
        if number is not None:
            out.append(number)
    return out


def _mode(values: list[float]) -> float | None:
    """Most common value; among equally common ones the largest."""
    if not values:
        return None
    counts = Counter(round(v, 3) for v in values)
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


def _number(value: object) -> float | None:
    """A finite float from a DS/IS/FL value, a multi-value (first item) or ASCII bytes."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace").strip("\x00 ").split("\\")[0]
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _b_values(header: Dataset) -> list[float]:
    """b-values of one image: DiffusionBValue (0018,9087) and the vendors' private elements."""
    found = []
    standard = _number(header_value(header, "DiffusionBValue"))
    if standard is not None:
        found.append(standard)
    tags = header.keys()  # iterating a Dataset itself would convert every element
    groups = {tag >> 16 for tag in tags if tag >> 16 in _PRIVATE_GROUPS}
    for group, creator, offset in _PRIVATE_B_VALUES:
        if group not in groups:
            continue
        try:
            value = _number(header.private_block(group, creator)[offset].value)
        except KeyError:
            continue  # no such private block or element
        except (ValueError, TypeError, OverflowError):
            value = None
        if value is None:
            continue
        if group == 0x0043 and value >= 1e9:
            value -= 1e9  # GE flags the first slop_int_6 value with 1e9
        found.append(value)
    return [b for b in found if 0 <= b < 1e5]


def _stack(headers: Sequence[Dataset], tolerance: float) -> tuple[int, float | None, bool, str]:
    """Distinct positions along the normal, their median gap, and whether the gaps are regular."""
    iop = header_value(headers[0], "ImageOrientationPatient")
    points = [header_value(h, "ImagePositionPatient") for h in headers]
    if iop is None or any(p is None for p in points):
        return len(headers), None, False, "no ImagePositionPatient / ImageOrientationPatient"
    try:
        row = np.asarray([float(v) for v in iop[:3]])
        col = np.asarray([float(v) for v in iop[3:6]])
        xyz = np.asarray([[float(v) for v in p] for p in points], dtype=np.float64)
    except (TypeError, ValueError, IndexError):
        return len(headers), None, False, "malformed ImagePositionPatient / ImageOrientationPatient"
    normal = np.cross(row, col)
    if xyz.shape[1:] != (3,) or float(np.linalg.norm(normal)) < 1e-6:
        return len(headers), None, False, "malformed ImagePositionPatient / ImageOrientationPatient"
    along = np.sort(xyz @ (normal / np.linalg.norm(normal)))
    distinct = [float(along[0])]
    for value in along[1:]:
        if value - distinct[-1] > 0.01:
            distinct.append(float(value))
    n = len(distinct)
    repeats = len(headers) - n
    if n < 2:
        return n, None, False, f"{len(headers)} image(s) at one position"
    gaps = np.diff(np.asarray(distinct))
    spacing = float(np.median(gaps))
    spread = float(np.max(np.abs(gaps - spacing)))
    return (
        n,
        spacing,
        repeats == 0 and spread <= tolerance * spacing,
        _stack_note(n, spacing, gaps, repeats),
    )


def _stack_note(n: int, spacing: float, gaps: np.ndarray, repeats: int) -> str:
    note = f"{n} positions, {spacing:.1f} mm apart"
    if float(np.max(gaps)) - float(np.min(gaps)) > 0.01:
        note = f"{n} positions, gaps {float(np.min(gaps)):.1f}-{float(np.max(gaps)):.1f} mm"
    if repeats:
        note += f", {repeats} image(s) repeat a position"
    return note
