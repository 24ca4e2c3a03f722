"""What a model was trained on, in acquisition terms: the header values of its training series
(Manufacturer, MagneticFieldStrength, EchoTime, RepetitionTime, PixelSpacing, Rows x Columns;
PS3.3 C.7.5.1, C.8.3.1, C.7.6.3) and their ranges, kept in the bundle manifest as
``training_distribution`` and compared with a study's by :mod:`pipeline.drift`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydicom.dataset import Dataset

ValueSource = Literal["dicom", "nifti", "phantom"]

_VENDOR_KEYS = (
    ("siemens", "siemens"),
    ("general electric", "ge"),
    ("ge medical", "ge"),
    ("ge healthcare", "ge"),
    ("philips", "philips"),
    ("toshiba", "canon"),
    ("canon", "canon"),
    ("hitachi", "fujifilm"),
    ("fujifilm", "fujifilm"),
    ("united imaging", "united imaging"),
    ("esaote", "esaote"),
)


def manufacturer_key(name: str) -> str:
    """A vendor's name reduced to one key, so that ``SIEMENS`` and ``Siemens Healthineers``,
    ``GE MEDICAL SYSTEMS`` and ``GE`` compare equal; an unknown name lower-cased and with
    its spaces collapsed."""
    text = re.sub(r"\s+", " ", name.strip().lower())
    for needle, key in _VENDOR_KEYS:
        if needle in text:
            return key
    if text == "ge" or text.startswith("ge "):
        return "ge"
    return text


@dataclass(frozen=True)
class AcquisitionValues:
    """The acquisition header values of one series (None where not known)."""

    source: ValueSource
    manufacturer: str | None = None
    field_strength_t: float | None = None
    echo_time_ms: float | None = None
    repetition_time_ms: float | None = None
    pixel_spacing_mm: tuple[float, float] | None = None  # (between rows, between columns)
    rows: int | None = None
    columns: int | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> AcquisitionValues:
        """The values of one classic MR image's header (a malformed or absent value is None)."""
        spacing = _floats(_get(ds, "PixelSpacing"))
        return cls(
            source="dicom",
            manufacturer=str(_get(ds, "Manufacturer") or "").strip() or None,
            field_strength_t=_float(_get(ds, "MagneticFieldStrength")),
            echo_time_ms=_float(_get(ds, "EchoTime")),
            repetition_time_ms=_float(_get(ds, "RepetitionTime")),
            pixel_spacing_mm=(spacing[0], spacing[1]) if len(spacing) == 2 else None,
            rows=_int(_get(ds, "Rows")),
            columns=_int(_get(ds, "Columns")),
        )

    def to_json(self) -> dict[str, Any]:
        """Plain data (job details, CLI)."""
        return {
            "manufacturer": self.manufacturer,
            "field_strength_t": self.field_strength_t,
            "echo_time_ms": self.echo_time_ms,
            "repetition_time_ms": self.repetition_time_ms,
            "pixel_spacing_mm": list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None,
            "matrix": [self.rows, self.columns] if self.rows and self.columns else None,
        }


def _get(ds: Dataset, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except (ValueError, TypeError, OverflowError):  # a malformed DS/IS value
        return None


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN is no value


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _floats(value: Any) -> list[float]:
    if value is None or isinstance(value, str | bytes):
        return []
    try:
        numbers = [_float(v) for v in value]
    except TypeError:
        return []
    return [n for n in numbers if n is not None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValueRange(_Strict):
    """The smallest and largest value seen in training."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> ValueRange:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self

    @classmethod
    def of(cls, values: Iterable[float | None]) -> ValueRange | None:
        """The range of the known values, or None when there are none."""
        known = [float(v) for v in values if v is not None]
        return cls(low=min(known), high=max(known)) if known else None


class TrainingDistribution(_Strict):
    """The acquisitions a bundle was trained on (manifest ``training_distribution``).

    A field left empty (None, or an empty list) was not known for the training data (NIfTI
    files carry no Manufacturer or echo time) and is not checked for drift.
    """

    sources: list[ValueSource] = Field(min_length=1)
    cases: int = Field(ge=1, description="training cases (series or slices) with values")
    manufacturers: list[str] = Field(default_factory=list)
    field_strength_t: ValueRange | None = None
    echo_time_ms: ValueRange | None = None
    repetition_time_ms: ValueRange | None = None
    pixel_spacing_mm: ValueRange | None = Field(
        default=None, description="both directions of PixelSpacing"
    )
    matrices: list[tuple[int, int]] = Field(
        default_factory=list, description="distinct (Rows, Columns)"
    )

    @property
    def manufacturer_keys(self) -> set[str]:
        return {manufacturer_key(m) for m in self.manufacturers}


def describe_distribution(dist: TrainingDistribution | None) -> list[str]:
    """The distribution in short lines for people (``liver-agent model info``)."""
    if dist is None:
        return ["no training distribution recorded (drift is not checked against this bundle)"]

    def span(r: ValueRange | None, unit: str) -> str:
        if r is None:
            return "not recorded"
        return f"{r.low:g} {unit}" if r.low == r.high else f"{r.low:g}-{r.high:g} {unit}"

    return [
        f"training inputs: {dist.cases} cases ({', '.join(dist.sources)})",
        f"manufacturers: {', '.join(dist.manufacturers) or 'not recorded'}",
        f"field strength: {span(dist.field_strength_t, 'T')}",
        f"echo time: {span(dist.echo_time_ms, 'ms')}",
        f"repetition time: {span(dist.repetition_time_ms, 'ms')}",
        f"pixel spacing: {span(dist.pixel_spacing_mm, 'mm')}",
        "matrices: " + (", ".join(f"{r} x {c}" for r, c in dist.matrices) or "not recorded"),
    ]


def distribution_of(values: Iterable[AcquisitionValues | None]) -> TrainingDistribution | None:
    """The distribution of the training series' values; None when no series has any."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    spacings = [s for v in known if v.pixel_spacing_mm for s in v.pixel_spacing_mm]
    return TrainingDistribution(
        sources=sorted({v.source for v in known}),
        cases=len(known),
        manufacturers=sorted({v.manufacturer for v in known if v.manufacturer}),
        field_strength_t=ValueRange.of(v.field_strength_t for v in known),
        echo_time_ms=ValueRange.of(v.echo_time_ms for v in known),
        repetition_time_ms=ValueRange.of(v.repetition_time_ms for v in known),
        pixel_spacing_mm=ValueRange.of(spacings),
        matrices=sorted({(v.rows, v.columns) for v in known if v.rows and v.columns}),
    )


__all__ = [
    "AcquisitionValues",
    "TrainingDistribution",
    "ValueRange",
    "describe_distribution",
    "distribution_of",
    "manufacturer_key",
]
