"""Which series of a study are worth retrieving, from series-level query attributes only.

A series-level C-FIND or QIDO-RS answer holds a few attributes (Modality, Series Description,
Number of Series Related Instances; PS3.4 C.6.1.1.4), not the image headers the selection
reads. Before a retrieval the agent skips only the series that the selection rules would
surely reject from these attributes: not MR, too few instances for a stack, or a description
whose keywords set a flag whose check rejects (localizer, diffusion, ADC, MRCP, derived,
gradient echo, T2*, contrast). Anything uncertain is fetched; the selection decides later.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.selection.features import normalise_text
from pipeline.selection.rules import SelectionRules

# keyword flag -> the check that rejects a series carrying it
_FLAG_CHECKS = {
    "localizer": "localizer",
    "diffusion": "diffusion",
    "adc": "adc",
    "mrcp": "mrcp",
    "derived": "derived",
    "gradient_echo": "gradient_echo",
    "t2star": "gradient_echo",
    "contrast": "contrast",
}


@dataclass(frozen=True)
class SeriesSummary:
    """What a series-level query returns about one series."""

    series_instance_uid: str
    modality: str | None
    description: str | None
    series_number: int | None
    instances: int | None


@dataclass(frozen=True)
class PrefilterDecision:
    series: SeriesSummary
    fetch: bool
    reason: str


def series_worth_fetching(series: SeriesSummary, rules: SelectionRules) -> PrefilterDecision:
    """Whether the selection could choose ``series``; the reason says why not."""
    checks = rules.checks
    if series.modality and series.modality.upper() != "MR" and checks.not_mr.reject:
        return PrefilterDecision(series, False, f"modality {series.modality}, not MR")
    minimum = rules.thresholds.min_slices
    if series.instances is not None and series.instances < minimum and checks.too_few_slices.reject:
        return PrefilterDecision(
            series, False, f"{series.instances} instances, fewer than {minimum} slices"
        )
    text = normalise_text(series.description)
    for name, keyword in rules.keywords.items():
        if not keyword.enabled or "description" not in keyword.fields:
            continue
        match = keyword.regex.search(text)
        if match is None:
            continue
        for flag in keyword.sets:
            check = _FLAG_CHECKS.get(flag)
            if check is not None and getattr(checks, check).reject:
                return PrefilterDecision(
                    series, False, f"description {match.group(0).strip()!r} ({name}): {flag}"
                )
    return PrefilterDecision(series, True, "may be the axial T2 series")


def candidate_series(
    series: list[SeriesSummary], rules: SelectionRules
) -> tuple[list[SeriesSummary], list[PrefilterDecision]]:
    """The series to retrieve, and every decision (for the cohort's reasons)."""
    decisions = [series_worth_fetching(s, rules) for s in series]
    return [d.series for d in decisions if d.fetch], decisions
