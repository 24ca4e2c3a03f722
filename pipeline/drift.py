"""Input drift: is a study's series far outside what a model was trained on? A pure comparison
of the series' header values (:class:`~pipeline.input_distribution.AcquisitionValues`) with the
bundle's :class:`~pipeline.input_distribution.TrainingDistribution`, with tolerances."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.input_distribution import (
    AcquisitionValues,
    TrainingDistribution,
    ValueRange,
    manufacturer_key,
)

NO_DISTRIBUTION = "no training distribution recorded"


@dataclass(frozen=True)
class DriftTolerance:
    """How far outside the training range a value may lie before it counts as drift, as a
    fraction of the range's bound (0.25: a training TE of 80-100 ms accepts 60-125 ms).

    ``manufacturer``: an unknown manufacturer is drift (False: not checked).
    """

    manufacturer: bool = True
    field_strength: float = 0.1
    echo_time: float = 0.25
    repetition_time: float = 0.5
    pixel_spacing: float = 0.25
    matrix: float = 0.5

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "manufacturer" and not 0 <= value <= 10:
                raise ValueError(f"tolerance {name} must be between 0 and 10, not {value}")


@dataclass(frozen=True)
class DriftCheck:
    """One compared value: what the series says, what training allowed, and whether it fits."""

    name: str
    value: Any
    allowed: Any
    ok: bool | None  # None: not compared (value or training range unknown)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "allowed": self.allowed, "ok": self.ok}


@dataclass(frozen=True)
class DriftResult:
    """The verdict for one model: flagged when any compared value lies outside its range."""

    model: str
    flagged: bool
    reasons: tuple[str, ...]
    checks: tuple[DriftCheck, ...] = field(default_factory=tuple)
    note: str | None = None  # e.g. "no training distribution recorded"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "flagged": self.flagged,
            "reasons": list(self.reasons),
            "checks": [c.to_json() for c in self.checks],
            "note": self.note,
        }


def _widened(bounds: ValueRange, tolerance: float) -> tuple[float, float]:
    return bounds.low * (1 - tolerance), bounds.high * (1 + tolerance)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _range_check(
    name: str,
    label: str,
    unit: str,
    value: float | None,
    bounds: ValueRange | None,
    tolerance: float,
) -> tuple[DriftCheck, str | None]:
    if value is None or bounds is None:
        allowed = None if bounds is None else [bounds.low, bounds.high]
        return DriftCheck(name, value, allowed, None), None
    low, high = _widened(bounds, tolerance)
    ok = low <= value <= high
    check = DriftCheck(name, value, [round(low, 4), round(high, 4)], ok)
    if ok:
        return check, None
    trained = (
        f"{_fmt(bounds.low)} {unit}"
        if bounds.low == bounds.high
        else f"{_fmt(bounds.low)}-{_fmt(bounds.high)} {unit}"
    )
    return check, (
        f"{label} {_fmt(value)} {unit} is outside the training range {trained} "
        f"(tolerance {tolerance:.0%})"
    )


def check_drift(
    values: AcquisitionValues,
    distribution: TrainingDistribution | None,
    tolerance: DriftTolerance = DriftTolerance(),
    *,
    model: str = "",
) -> DriftResult:
    """Compare one series' header values with a model's training distribution.

    Parameters
    ----------
    values
        The selected series' values (:meth:`AcquisitionValues.from_dataset` of its first image).
    distribution
        The bundle's ``training_distribution``; None for a bundle that recorded none (the
        result is not flagged and says so).
    tolerance
        How far outside the training ranges a value may lie.
    model
        The model's name and version, for the result.

    Returns
    -------
    DriftResult
        Flagged with one reason per value outside its range; values or ranges that are not
        known are listed with ``ok`` None and never flag.
    """
    if distribution is None:
        return DriftResult(model, False, (), (), NO_DISTRIBUTION)
    checks: list[DriftCheck] = []
    reasons: list[str] = []

    def add(check: DriftCheck, reason: str | None) -> None:
        checks.append(check)
        if reason is not None:
            reasons.append(reason)

    if tolerance.manufacturer and distribution.manufacturers and values.manufacturer:
        known = manufacturer_key(values.manufacturer) in distribution.manufacturer_keys
        add(
            DriftCheck("manufacturer", values.manufacturer, distribution.manufacturers, known),
            None
            if known
            else f"manufacturer {values.manufacturer!r} is not among the training data's "
            f"({', '.join(distribution.manufacturers)})",
        )
    else:
        add(DriftCheck("manufacturer", values.manufacturer, distribution.manufacturers, None), None)
    add(
        *_range_check(
            "field_strength_t",
            "field strength",
            "T",
            values.field_strength_t,
            distribution.field_strength_t,
            tolerance.field_strength,
        )
    )
    add(
        *_range_check(
            "echo_time_ms",
            "echo time",
            "ms",
            values.echo_time_ms,
            distribution.echo_time_ms,
            tolerance.echo_time,
        )
    )
    add(
        *_range_check(
            "repetition_time_ms",
            "repetition time",
            "ms",
            values.repetition_time_ms,
            distribution.repetition_time_ms,
            tolerance.repetition_time,
        )
    )
    spacing = values.pixel_spacing_mm
    coarsest = None if spacing is None else max(spacing)
    finest = None if spacing is None else min(spacing)
    spacing_check, spacing_reason = _range_check(
        "pixel_spacing_mm",
        "pixel spacing",
        "mm",
        coarsest,
        distribution.pixel_spacing_mm,
        tolerance.pixel_spacing,
    )
    if spacing_reason is None and finest is not None and finest != coarsest:
        spacing_check, spacing_reason = _range_check(
            "pixel_spacing_mm",
            "pixel spacing",
            "mm",
            finest,
            distribution.pixel_spacing_mm,
            tolerance.pixel_spacing,
        )
    if spacing is not None:
        spacing_check = DriftCheck(
            spacing_check.name, list(spacing), spacing_check.allowed, spacing_check.ok
        )
    add(spacing_check, spacing_reason)
    add(*_matrix_check(values, distribution, tolerance.matrix))
    return DriftResult(model, bool(reasons), tuple(reasons), tuple(checks))


def _matrix_check(
    values: AcquisitionValues, distribution: TrainingDistribution, tolerance: float
) -> tuple[DriftCheck, str | None]:
    value = [values.rows, values.columns] if values.rows and values.columns else None
    if value is None or not distribution.matrices:
        allowed = [list(m) for m in distribution.matrices] or None
        return DriftCheck("matrix", value, allowed, None), None
    rows = ValueRange.of(m[0] for m in distribution.matrices)
    columns = ValueRange.of(m[1] for m in distribution.matrices)
    assert rows is not None
    assert columns is not None
    row_low, row_high = _widened(rows, tolerance)
    col_low, col_high = _widened(columns, tolerance)
    ok = row_low <= value[0] <= row_high and col_low <= value[1] <= col_high
    allowed = [[round(row_low), round(row_high)], [round(col_low), round(col_high)]]
    check = DriftCheck("matrix", value, allowed, ok)
    if ok:
        return check, None
    trained = ", ".join(f"{r} x {c}" for r, c in distribution.matrices[:6])
    more = " ..." if len(distribution.matrices) > 6 else ""
    return check, (
        f"matrix {value[0]} x {value[1]} is outside the training matrices ({trained}{more}; "
        f"tolerance {tolerance:.0%})"
    )


def drift_summary(results: list[DriftResult], values: AcquisitionValues) -> dict[str, Any]:
    """The job's ``details["drift"]``: ``flagged`` (any model flagged), ``reasons`` (each
    model's, prefixed by the model when there are several) and ``checked`` (the series'
    values and every model's comparison)."""
    several = len([r for r in results if r.note is None]) > 1
    reasons = [
        f"{r.model}: {reason}" if several and r.model else reason
        for r in results
        for reason in r.reasons
    ]
    notes = sorted({r.note for r in results if r.note})
    return {
        "flagged": any(r.flagged for r in results),
        "reasons": reasons,
        "checked": {
            "series": values.to_json(),
            "models": [r.to_json() for r in results],
            "note": "; ".join(notes) if notes and len(notes) == len(results) else None,
        },
    }


__all__ = [
    "NO_DISTRIBUTION",
    "DriftCheck",
    "DriftResult",
    "DriftTolerance",
    "check_drift",
    "drift_summary",
]
