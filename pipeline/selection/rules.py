"""Series-selection rules: the typed model, the shipped defaults, a site file merged over them."""

from __future__ import annotations

import logging
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

DEFAULT_RULES_FILE = Path(__file__).with_name("rules.yaml")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser where libyaml is built

TextField = Literal["description", "protocol", "sequence"]
Flag = Literal[
    "t2",
    "t1",
    "single_shot",
    "turbo_spin_echo",
    "fat_suppressed",
    "contrast",
    "diffusion",
    "adc",
    "localizer",
    "derived",
    "mrcp",
    "gradient_echo",
    "t2star",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Strict):
    """Numbers the checks compare header values with (ms, mm, degrees)."""

    axial_max_angle_deg: float = Field(30.0, gt=0, lt=55)
    min_slices: int = Field(10, ge=1)
    t2_min_te_ms: float = Field(60.0, gt=0)
    t1_max_te_ms: float = Field(30.0, gt=0)
    t1_max_tr_ms: float = Field(1000.0, gt=0)
    long_tr_ms: float = Field(1000.0, gt=0)
    t2star_min_te_ms: float = Field(5.0, ge=0)
    t2star_max_te_ms: float = Field(60.0, gt=0)
    mrcp_min_te_ms: float = Field(400.0, gt=0)
    mrcp_3d_min_te_ms: float = Field(250.0, gt=0)
    thick_slab_mm: float = Field(20.0, gt=0)
    single_shot_min_echo_train: int = Field(64, ge=2)
    stir_min_ti_ms: float = Field(100.0, ge=0)
    stir_max_ti_ms: float = Field(300.0, gt=0)
    stack_tolerance: float = Field(0.2, gt=0, lt=1)


class Tokens(_Strict):
    """Enumerated header values that mean something to the checks (compared upper-case)."""

    image_type_derived: frozenset[str] = frozenset()
    image_type_localizer: frozenset[str] = frozenset()
    image_type_diffusion: frozenset[str] = frozenset()
    image_type_adc: frozenset[str] = frozenset()
    scan_options_fat_suppression: frozenset[str] = frozenset()
    contrast_agent_none: frozenset[str] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, list | tuple | set | frozenset):
            return frozenset(str(v).strip().upper() for v in value)
        return value


class Check(_Strict):
    """What a check does when it fires: add ``score``; with ``reject`` also make it ineligible."""

    score: float = 0.0
    reject: bool = False
    enabled: bool = True


class Checks(_Strict):
    """Every check the selector runs, by name (see rules.yaml for what each one looks at)."""

    not_mr: Check = Check(score=-100, reject=True)
    unsupported_sop_class: Check = Check(score=-100, reject=True)
    no_orientation: Check = Check(score=-100, reject=True)
    mixed_orientation: Check = Check(score=-100, reject=True)
    not_axial: Check = Check(score=-100, reject=True)
    localizer: Check = Check(score=-100, reject=True)
    derived: Check = Check(score=-100, reject=True)
    diffusion: Check = Check(score=-100, reject=True)
    adc: Check = Check(score=-100, reject=True)
    t1_weighted: Check = Check(score=-100, reject=True)
    short_te: Check = Check(score=-100, reject=True)
    gradient_echo: Check = Check(score=-100, reject=True)
    mrcp: Check = Check(score=-100, reject=True)
    too_few_slices: Check = Check(score=-100, reject=True)
    contrast: Check = Check(score=-100, reject=True)
    no_t2_evidence: Check = Check(score=-100, reject=True)
    axial: Check = Check()
    t2_te: Check = Check()
    t2_named: Check = Check()
    spin_echo: Check = Check()
    long_tr: Check = Check()
    single_shot: Check = Check()
    turbo_spin_echo: Check = Check()
    not_fat_suppressed: Check = Check()
    fat_suppressed: Check = Check()
    acquisition_2d: Check = Check()
    regular_stack: Check = Check()
    irregular_stack: Check = Check()
    multi_echo: Check = Check()
    echo_planar: Check = Check()
    t1_named: Check = Check()


class Keyword(_Strict):
    """A regular expression searched in header text; a match sets flags and may add a score."""

    pattern: str
    fields: tuple[TextField, ...] = ("description", "protocol")
    sets: tuple[Flag, ...] = ()
    score: float = 0.0
    enabled: bool = True
    label: str | None = None  # shown in reasons; default: the text that matched

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"invalid regular expression: {err}") from err
        return value

    @field_validator("fields")
    @classmethod
    def _not_empty(cls, value: tuple[TextField, ...]) -> tuple[TextField, ...]:
        if not value:
            raise ValueError("name at least one field (description, protocol, sequence)")
        return value

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """The compiled pattern."""
        return re.compile(self.pattern)


class SelectionRules(_Strict):
    """The whole rule set: thresholds, token lists, check scores and keywords."""

    version: Literal[1] = 1
    thresholds: Thresholds = Thresholds()
    tokens: Tokens = Tokens()
    checks: Checks = Checks()
    keywords: dict[str, Keyword] = Field(default_factory=dict)


def load_rules(path: Path | None = None) -> SelectionRules:
    """The shipped rules, with a site file merged over them.

    Mappings in the site file are merged key by key into the defaults; other values
    (numbers, lists, strings) replace them. A keyword not in the defaults is added.

    Parameters
    ----------
    path
        Site YAML file, or None for the shipped rules only (``pipeline/selection/rules.yaml``).

    Raises
    ------
    PipelineError
        ``invalid_selection_rules``: the file is missing, not YAML, not a mapping, or a value is
        invalid; the message names the field (``checks.contrast.reject``).
    """
    data = _read_yaml(DEFAULT_RULES_FILE)
    if path is not None:
        data = _merge(data, _read_yaml(path))
    where = str(path) if path is not None else str(DEFAULT_RULES_FILE)
    try:
        rules = SelectionRules.model_validate(data)
    except ValidationError as err:
        raise PipelineError("invalid_selection_rules", _describe(where, err)) from err
    logger.debug("selection rules loaded from %s", where)
    return rules


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise PipelineError(
            "invalid_selection_rules", f"cannot read selection rules file {path}: {err.strerror}"
        ) from err
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as err:
        raise PipelineError(
            "invalid_selection_rules", f"selection rules file {path} is not valid YAML: {err}"
        ) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PipelineError(
            "invalid_selection_rules",
            f"selection rules file {path} must hold a mapping (thresholds, tokens, checks, "
            "keywords)",
        )
    return data


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(where: str, err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(rules)"
        lines.append(f"{field}: {item['msg']}")
    return f"invalid selection rules in {where}: " + "; ".join(lines)
