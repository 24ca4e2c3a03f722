"""The selection checks: each looks at a series' features and, when it fires, says why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydicom.uid import UID

from pipeline.selection.features import ENHANCED_MR_STORAGE, MR_IMAGE_STORAGE, SeriesFeatures
from pipeline.selection.rules import Flag, SelectionRules

_GATES = frozenset({"not_mr", "unsupported_sop_class"})  # run first (order of Checks fields)
_FIELD_LABELS = {"description": "description", "protocol": "protocol", "sequence": "sequence name"}


@dataclass(frozen=True)
class Finding:
    """One check or keyword that fired: its name, points, whether it rejects, and why."""

    name: str
    score: float
    reject: bool
    reason: str


@dataclass(frozen=True)
class _Context:
    f: SeriesFeatures
    flags: dict[Flag, tuple[str, ...]]  # flag -> evidence ("description matches 'haste'")
    rules: SelectionRules

    def flag(self, name: Flag) -> tuple[str, ...]:
        return self.flags.get(name, ())


def run_checks(features: SeriesFeatures, rules: SelectionRules) -> list[Finding]:
    """Every enabled check and scored keyword that fires for this series, rejections first."""
    flags, keyword_findings = _match_keywords(features, rules)
    ctx = _Context(features, flags, rules)
    rejections: list[Finding] = []
    scores: list[Finding] = []
    for name, check in rules.checks:
        if not check.enabled:
            continue
        detail = CHECKS[name](ctx)
        if detail is not None and check.reject:
            rejections.append(Finding(name, check.score, True, f"rejected: {detail}"))
        elif detail is not None:
            scores.append(Finding(name, check.score, False, detail))
        if name in _GATES and rejections:
            return rejections  # not an MR image: nothing else can be judged
    return rejections + scores + keyword_findings


def _match_keywords(
    f: SeriesFeatures, rules: SelectionRules
) -> tuple[dict[Flag, tuple[str, ...]], list[Finding]]:
    flags: dict[Flag, tuple[str, ...]] = {}
    findings: list[Finding] = []
    for name, keyword in rules.keywords.items():
        if not keyword.enabled:
            continue
        for field in keyword.fields:
            match = keyword.regex.search(f.texts.get(field, ""))
            if match:
                label = keyword.label or match.group(0).strip() or name
                evidence = f"{_FIELD_LABELS[field]} matches '{label}'"
                for flag in keyword.sets:
                    flags[flag] = (*flags.get(flag, ()), evidence)
                if keyword.score:
                    findings.append(Finding(f"keyword:{name}", keyword.score, False, evidence))
                break
    return flags, findings


def _ms(value: float) -> str:
    return f"{value:g} ms"


def _joined(parts: list[str]) -> str | None:
    return "; ".join(parts) if parts else None


# Rejections ------------------------------------------------------------------------------


def _not_mr(c: _Context) -> str | None:
    return None if c.f.modality == "MR" else f"modality {c.f.modality or 'missing'}, not MR"


def _unsupported_sop_class(c: _Context) -> str | None:
    if c.f.modality != "MR":
        return None  # already said by not_mr
    others = [uid for uid in c.f.sop_classes if uid != MR_IMAGE_STORAGE]
    if not others:
        return None
    if any(uid in ENHANCED_MR_STORAGE for uid in others):
        return "multi-frame Enhanced MR not supported yet"
    return f"SOP class {UID(others[0]).name or others[0]} is not MR Image Storage"


def _no_orientation(c: _Context) -> str | None:
    return "no usable ImageOrientationPatient" if c.f.orientation is None else None


def _mixed_orientation(c: _Context) -> str | None:
    if len(c.f.planes) > 1:
        return f"images in several planes ({', '.join(c.f.planes)})"
    return None


def _not_axial(c: _Context) -> str | None:
    o = c.f.orientation
    if o is None or o.plane == "axial" or len(c.f.planes) > 1:
        return None
    return f"{o.plane} (normal {o.angle_deg:.0f} deg from {o.axis})"


def _localizer(c: _Context) -> str | None:
    found = [v for v in c.f.image_type if v in c.rules.tokens.image_type_localizer]
    parts = [f"ImageType {'/'.join(found)}"] if found else []
    parts += c.flag("localizer")
    return f"localizer ({_joined(parts)})" if parts else None


def _derived(c: _Context) -> str | None:
    found = [v for v in c.f.image_type if v in c.rules.tokens.image_type_derived]
    parts = [f"ImageType {'/'.join(found)}"] if found else []
    parts += c.flag("derived")
    return f"derived image, not an acquisition ({_joined(parts)})" if parts else None


def _diffusion(c: _Context) -> str | None:
    parts = []
    b = c.f.b_values
    if b and (max(b) > 0 or "EP" in c.f.scanning_sequence):
        parts.append("b-values " + "/".join(f"{v:g}" for v in b))
    found = [v for v in c.f.image_type if v in c.rules.tokens.image_type_diffusion]
    if found:
        parts.append(f"ImageType {'/'.join(found)}")
    parts += c.flag("diffusion")
    return f"diffusion ({_joined(parts)})" if parts else None


def _adc(c: _Context) -> str | None:
    found = [v for v in c.f.image_type if v in c.rules.tokens.image_type_adc]
    parts = [f"ImageType {'/'.join(found)}"] if found else []
    parts += c.flag("adc")
    return f"ADC map from diffusion ({_joined(parts)})" if parts else None


def _t1_weighted(c: _Context) -> str | None:
    te, tr, t = c.f.echo_time, c.f.repetition_time, c.rules.thresholds
    if te is None or tr is None or te >= t.t1_max_te_ms or tr >= t.t1_max_tr_ms:
        return None
    if _is_t2star(c):
        return None  # short TR, but T2*-weighted: gradient_echo says so
    return f"T1-weighted (TE {_ms(te)}, TR {_ms(tr)})"


def _short_te(c: _Context) -> str | None:
    te = c.f.echo_time
    if te is None or te >= c.rules.thresholds.t2_min_te_ms or _t1_weighted(c) is not None:
        return None
    floor = _ms(c.rules.thresholds.t2_min_te_ms)
    return f"TE {_ms(te)} is too short for T2 weighting (T2 from {floor})"


def _gradient_echo_by_sequence(c: _Context) -> bool:
    seq = c.f.scanning_sequence
    return "GR" in seq and "SE" not in seq


def _is_t2star(c: _Context) -> bool:
    """T2*-weighted gradient echo: by name, or ScanningSequence GR with TE in the T2* range."""
    t, te = c.rules.thresholds, c.f.echo_time
    by_te = te is not None and t.t2star_min_te_ms <= te <= t.t2star_max_te_ms
    return bool(c.flag("t2star")) or (_gradient_echo_by_sequence(c) and by_te)


def _gradient_echo(c: _Context) -> str | None:
    te, seq = c.f.echo_time, c.f.scanning_sequence
    parts = []
    if _gradient_echo_by_sequence(c):
        parts.append(f"ScanningSequence {'/'.join(seq)}" + (f", TE {_ms(te)}" if te else ""))
    parts += c.flag("t2star") + c.flag("gradient_echo")
    if not parts:
        return None
    return f"{'T2* ' if _is_t2star(c) else ''}gradient echo ({_joined(parts)})"


def _mrcp(c: _Context) -> str | None:
    t, te, f = c.rules.thresholds, c.f.echo_time, c.f
    parts = []
    if te is not None and te >= t.mrcp_min_te_ms:
        parts.append(f"TE {_ms(te)}")
    elif te is not None and f.mr_acquisition_type == "3D" and te >= t.mrcp_3d_min_te_ms:
        parts.append(f"3D, TE {_ms(te)}")
    thick = f.slice_thickness
    if thick is not None and thick >= t.thick_slab_mm and (te is None or te >= t.t2_min_te_ms):
        parts.append(f"{thick:g} mm slab")
    parts += c.flag("mrcp")
    return f"MRCP, heavily T2-weighted ({_joined(parts)})" if parts else None


def _too_few_slices(c: _Context) -> str | None:
    need = c.rules.thresholds.min_slices
    if c.f.n_positions >= need:
        return None
    return f"too few slices ({c.f.n_positions} position(s), need {need})"


def _contrast(c: _Context) -> str | None:
    agent = c.f.contrast_agent
    parts = []
    if agent and agent.upper() not in c.rules.tokens.contrast_agent_none:
        parts.append(f"ContrastBolusAgent '{agent}'")
    parts += c.flag("contrast")
    return f"contrast-enhanced ({_joined(parts)})" if parts else None


def _no_t2_evidence(c: _Context) -> str | None:
    if c.f.echo_time is not None or c.flag("t2") or c.flag("single_shot"):
        return None
    return "no EchoTime, and neither description nor protocol says T2"


# Scores ----------------------------------------------------------------------------------


def _axial(c: _Context) -> str | None:
    o = c.f.orientation
    if o is None or o.plane != "axial" or len(c.f.planes) > 1:
        return None
    return f"axial (normal {o.angle_deg:.0f} deg from z)"


def _t2_te(c: _Context) -> str | None:
    te, t = c.f.echo_time, c.rules.thresholds
    if te is None or not t.t2_min_te_ms <= te < t.mrcp_min_te_ms:
        return None
    return f"TE {_ms(te)}: T2-weighted"


def _t2_named(c: _Context) -> str | None:
    return f"T2 by name ({_joined(list(c.flag('t2')))})" if c.flag("t2") else None


def _spin_echo(c: _Context) -> str | None:
    seq = c.f.scanning_sequence
    if "SE" in seq and "GR" not in seq and "EP" not in seq:
        return f"spin echo (ScanningSequence {'/'.join(seq)})"
    return None


def _long_tr(c: _Context) -> str | None:
    tr = c.f.repetition_time
    return f"TR {_ms(tr)}: long" if tr is not None and tr >= c.rules.thresholds.long_tr_ms else None


def _single_shot(c: _Context) -> str | None:
    parts = list(c.flag("single_shot"))
    etl = c.f.echo_train_length
    if etl is not None and etl >= c.rules.thresholds.single_shot_min_echo_train:
        parts.append(f"echo train length {etl}")
    return f"single-shot ({_joined(parts)})" if parts else None


def _turbo_spin_echo(c: _Context) -> str | None:
    if not c.flag("turbo_spin_echo") or _single_shot(c) is not None:
        return None
    return f"turbo spin echo ({_joined(list(c.flag('turbo_spin_echo')))})"


def _fat_suppression(c: _Context) -> list[str]:
    t = c.rules.thresholds
    parts = list(c.flag("fat_suppressed"))
    found = [v for v in c.f.scan_options if v in c.rules.tokens.scan_options_fat_suppression]
    if found:
        parts.append(f"ScanOptions {'/'.join(found)}")
    ti = c.f.inversion_time
    inversion = "IR" in c.f.scanning_sequence and ti is not None
    if inversion and ti is not None and t.stir_min_ti_ms <= ti <= t.stir_max_ti_ms:
        parts.append(f"STIR, TI {_ms(ti)}")
    return parts


def _fat_suppressed(c: _Context) -> str | None:
    parts = _fat_suppression(c)
    return f"fat-suppressed ({_joined(parts)})" if parts else None


def _not_fat_suppressed(c: _Context) -> str | None:
    return None if _fat_suppression(c) else "no fat suppression (preferred)"


def _acquisition_2d(c: _Context) -> str | None:
    return "2D acquisition" if c.f.mr_acquisition_type == "2D" else None


def _regular_stack(c: _Context) -> str | None:
    return f"regular stack ({c.f.stack_note})" if c.f.regular_stack else None


def _irregular_stack(c: _Context) -> str | None:
    if c.f.regular_stack or c.f.n_positions < 2:
        return None
    return f"slice positions not a regular stack ({c.f.stack_note})"


def _multi_echo(c: _Context) -> str | None:
    if len(c.f.echo_times) < 2:
        return None
    return f"multi-echo (TE {'/'.join(f'{v:g}' for v in c.f.echo_times)} ms)"


def _echo_planar(c: _Context) -> str | None:
    seq = c.f.scanning_sequence
    return f"echo planar (ScanningSequence {'/'.join(seq)})" if "EP" in seq else None


def _t1_named(c: _Context) -> str | None:
    return f"T1 by name ({_joined(list(c.flag('t1')))})" if c.flag("t1") else None


CHECKS: dict[str, Callable[[_Context], str | None]] = {
    "not_mr": _not_mr,
    "unsupported_sop_class": _unsupported_sop_class,
    "no_orientation": _no_orientation,
    "mixed_orientation": _mixed_orientation,
    "not_axial": _not_axial,
    "localizer": _localizer,
    "derived": _derived,
    "diffusion": _diffusion,
    "adc": _adc,
    "t1_weighted": _t1_weighted,
    "short_te": _short_te,
    "gradient_echo": _gradient_echo,
    "mrcp": _mrcp,
    "too_few_slices": _too_few_slices,
    "contrast": _contrast,
    "no_t2_evidence": _no_t2_evidence,
    "axial": _axial,
    "t2_te": _t2_te,
    "t2_named": _t2_named,
    "spin_echo": _spin_echo,
    "long_tr": _long_tr,
    "single_shot": _single_shot,
    "turbo_spin_echo": _turbo_spin_echo,
    "not_fat_suppressed": _not_fat_suppressed,
    "fat_suppressed": _fat_suppressed,
    "acquisition_2d": _acquisition_2d,
    "regular_stack": _regular_stack,
    "irregular_stack": _irregular_stack,
    "multi_echo": _multi_echo,
    "echo_planar": _echo_planar,
    "t1_named": _t1_named,
}
