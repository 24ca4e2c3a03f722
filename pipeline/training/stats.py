"""Classification metrics and the comparison of the model's accuracy with readers'."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

COMPARISON_TEST = (
    "chi-square test of two proportions (2x2 table correct/incorrect, Yates correction); "
    "McNemar would need each reader's reads of the same cases, which only accuracies lack"
)


@dataclass(frozen=True)
class BinaryMetrics:
    """Accuracy, sensitivity, specificity and AUC (None where undefined)."""

    n: int
    accuracy: float
    sensitivity: float | None
    specificity: float | None
    auc: float | None
    correct: int


@dataclass(frozen=True)
class ReaderComparison:
    """The model's accuracy against one reader's, with the test used and its p-value."""

    reader_accuracy: float
    reader_cases: int
    model_accuracy: float
    model_cases: int
    chi2: float
    p_value: float
    fisher_p_value: float
    test: str = COMPARISON_TEST


def auc_score(labels: npt.NDArray[np.int_], scores: npt.NDArray[np.float64]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); None with one class."""
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(scores)
    u = float(ranks[pos].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def binary_metrics(
    labels: npt.NDArray[np.int_], probabilities: npt.NDArray[np.float64], threshold: float
) -> BinaryMetrics:
    """Metrics of thresholded probabilities against labels (1 = cirrhosis)."""
    pred = probabilities >= threshold
    pos = labels == 1
    tp, tn = int((pred & pos).sum()), int((~pred & ~pos).sum())
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return BinaryMetrics(
        n=len(labels),
        accuracy=(tp + tn) / len(labels) if len(labels) else float("nan"),
        sensitivity=tp / n_pos if n_pos else None,
        specificity=tn / n_neg if n_neg else None,
        auc=auc_score(labels, probabilities),
        correct=tp + tn,
    )


def compare_with_reader(
    model_correct: int, model_cases: int, reader_accuracy: float, reader_cases: int
) -> ReaderComparison:
    """Chi-square test (with Yates correction) of the model's against a reader's proportion
    correct; Fisher's exact p is given too for small counts."""
    if not 0 <= reader_accuracy <= 1 or reader_cases < 1 or model_cases < 1:
        raise ValueError("reader accuracy must be within 0..1 and case counts positive")
    reader_correct = round(reader_accuracy * reader_cases)
    table = np.array(
        [
            [model_correct, model_cases - model_correct],
            [reader_correct, reader_cases - reader_correct],
        ]
    )
    if (table.sum(axis=0) == 0).any():
        chi2, p = 0.0, 1.0  # both all correct (or all wrong): no difference to test
    else:
        res = stats.chi2_contingency(table, correction=True)
        chi2, p = float(res.statistic), float(res.pvalue)
    fisher = float(stats.fisher_exact(table).pvalue)
    return ReaderComparison(
        reader_accuracy=reader_accuracy,
        reader_cases=reader_cases,
        model_accuracy=model_correct / model_cases,
        model_cases=model_cases,
        chi2=chi2,
        p_value=p,
        fisher_p_value=fisher,
    )
