"""Series selection: find the axial T2-weighted series of a study by rules, scores and reasons."""

from pipeline.selection.features import SeriesFeatures, series_features
from pipeline.selection.rules import DEFAULT_RULES_FILE, SelectionRules, load_rules
from pipeline.selection.select import default_rules, evaluate_series, select_t2_series

__all__ = [
    "DEFAULT_RULES_FILE",
    "SelectionRules",
    "SeriesFeatures",
    "default_rules",
    "evaluate_series",
    "load_rules",
    "select_t2_series",
    "series_features",
]
