"""Choose the axial T2-weighted series of a study: score every series, keep every reason."""

from __future__ import annotations

import logging
from functools import lru_cache

from pipeline.results import SeriesCandidate, SeriesSelection
from pipeline.selection.checks import run_checks
from pipeline.selection.features import SeriesFeatures, series_features
from pipeline.selection.rules import SelectionRules, load_rules
from pipeline.study_headers import StudyHeaders

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def default_rules() -> SelectionRules:
    """The shipped rules (``pipeline/selection/rules.yaml``), read once."""
    return load_rules(None)


def evaluate_series(features: SeriesFeatures, rules: SelectionRules) -> SeriesCandidate:
    """Score one series: the sum of the points of every check that fires, with the reasons.

    The series is eligible when no check with ``reject: true`` fires.
    """
    findings = run_checks(features, rules)
    return SeriesCandidate(
        series_instance_uid=features.series_instance_uid,
        description=features.description,
        score=round(sum(f.score for f in findings), 2),
        eligible=not any(f.reject for f in findings),
        reasons=tuple(f.reason for f in findings),
    )


def select_t2_series(study: StudyHeaders, rules: SelectionRules | None = None) -> SeriesSelection:
    """Choose the axial T2-weighted series of a study.

    Every series is scored by the rules (:mod:`pipeline.selection.rules`, shipped defaults in
    ``rules.yaml``); the eligible series with the highest score wins. Equal scores go to the
    series with more slice positions, then the lower SeriesNumber, then the lower UID.

    Parameters
    ----------
    study
        Headers of the study (:func:`pipeline.study_headers.scan_study`).
    rules
        Selection rules; None for the shipped defaults.

    Returns
    -------
    SeriesSelection
        The chosen SeriesInstanceUID, or None when no series is eligible, and every series as a
        candidate with its score and reasons: eligible ones first, then by the same order
        that picks the winner (score descending, ...).
    """
    rules = rules if rules is not None else default_rules()
    judged = []
    for series in study.series:
        features = series_features(series, rules.thresholds)
        judged.append((evaluate_series(features, rules), features))
    judged.sort(
        key=lambda cf: (
            not cf[0].eligible,
            -cf[0].score,
            -cf[1].n_positions,
            cf[1].series_number if cf[1].series_number is not None else 2**31,
            cf[0].series_instance_uid,
        )
    )
    candidates = tuple(c for c, _ in judged)
    chosen = candidates[0].series_instance_uid if candidates and candidates[0].eligible else None
    if chosen is None:
        logger.info(
            "study %s: no eligible axial T2 series among %d",
            study.study_instance_uid,
            len(candidates),
        )
    else:
        logger.info(
            "study %s: chose series %s (score %s) among %d",
            study.study_instance_uid,
            chosen,
            candidates[0].score,
            len(candidates),
        )
    return SeriesSelection(series_instance_uid=chosen, candidates=candidates)
