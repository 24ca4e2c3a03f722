"""The validation report of a classifier on a labelled package: every number is present and
agrees with the confusion matrix and the per-study table it is written with; the files open
offline (PNG figures, no remote resource)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from pipeline.bundle import load_bundle, save_bundle
from pipeline.inference import ClassificationModel
from pipeline.training.cls_report import ClsReport, classification_report
from pipeline.training.cls_report_html import FIGURES, write_report
from pipeline.training.cohort import LabelledCohort, read_cohort
from pipeline.training.stats import auc_score
from tests.bundles import write_test_bundles
from tests.cohort_package import write_cohort_package

PNG = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.slow  # builds a ResNet50 and classifies ten slices


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> LabelledCohort:
    out = tmp_path_factory.mktemp("cohort") / "package"
    write_cohort_package(out, per_class=5, matrix=48, slices=20)
    return read_cohort(out, out / "labels.csv")


@pytest.fixture(scope="module")
def report(cohort: LabelledCohort, tmp_path_factory: pytest.TempPathFactory) -> ClsReport:
    """An untrained test classifier whose threshold is set to the median probability on the
    package, so that both predictions occur (the numbers mean nothing, their agreement does)."""
    folder = tmp_path_factory.mktemp("bundles")
    _, path = write_test_bundles(folder)
    bundle = load_bundle(path)
    probs = ClassificationModel(bundle, device="cpu").probabilities(
        [c.case.image for c in cohort.cases], [c.case.mask for c in cohort.cases]
    )
    manifest = bundle.manifest.model_dump(mode="json")
    manifest["classification"]["threshold"] = float(np.median(probs))
    save_bundle(path, manifest, bundle.state_dict, overwrite=True)
    return classification_report(
        load_bundle(path), cohort.cases, cohort.readers, split="all", device="cpu"
    )


def _wilson(k: int, n: int) -> tuple[float, float]:
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    return float(low), float(high)


def test_network_numbers_agree_with_the_confusion_matrix(report: ClsReport) -> None:
    cm = report.confusion
    labels = np.array([c["label"] for c in report.cases])
    predicted = np.array([c["predicted"] for c in report.cases])
    probs = np.array([c["probability"] for c in report.cases])
    assert cm.n == report.n == len(report.cases) == 10
    assert cm.tp == int(((predicted == 1) & (labels == 1)).sum())
    assert cm.tn == int(((predicted == 0) & (labels == 0)).sum())
    assert cm.fp == int(((predicted == 1) & (labels == 0)).sum())
    assert cm.fn == int(((predicted == 0) & (labels == 1)).sum())
    assert 0 < cm.tp + cm.fp < cm.n  # both predictions occur
    assert np.array_equal(predicted, (probs >= report.threshold).astype(int))
    assert report.accuracy.value == (cm.tp + cm.tn) / cm.n
    assert report.sensitivity.value == cm.tp / (cm.tp + cm.fn)
    assert report.specificity.value == cm.tn / (cm.tn + cm.fp)
    for p, k, n in (
        (report.accuracy, cm.tp + cm.tn, cm.n),
        (report.sensitivity, cm.tp, cm.tp + cm.fn),
        (report.specificity, cm.tn, cm.tn + cm.fp),
    ):
        assert (p.k, p.n) == (k, n)
        assert (p.ci_low, p.ci_high) == pytest.approx(_wilson(k, n))
        assert p.ci_low is not None
        assert p.ci_high is not None
        assert p.value is not None
        assert p.ci_low <= p.value <= p.ci_high
    assert report.auc == pytest.approx(roc_auc_score(labels, probs))
    assert auc_score(labels, probs) == pytest.approx(report.auc)  # what the bootstrap uses
    assert report.auc_ci_low is not None
    assert report.auc_ci_high is not None
    assert report.auc_ci_low <= report.auc <= report.auc_ci_high
    assert report.auc_bootstrap["used"] > 1900
    roc = report.roc
    assert roc["fpr"][0] == 0.0
    assert roc["tpr"][-1] == 1.0
    assert roc["fpr"][-1] == 1.0
    assert np.all(np.diff(roc["fpr"]) >= 0)
    assert np.all(np.diff(roc["tpr"]) >= 0)
    cal = report.calibration
    assert sum(cal["counts"]) == report.n
    assert len(cal["counts"]) == len(cal["mean_predicted"]) == len(cal["fraction_positive"])
    assert cal["brier_score"] == pytest.approx(float(np.mean((probs - labels) ** 2)))


def test_each_reader_is_scored_and_compared_on_the_studies_read(
    report: ClsReport, cohort: LabelledCohort
) -> None:
    assert [r.name for r in report.readers] == ["alice", "bob"]
    by_study = {c["study_uid"]: c for c in report.cases}
    for r in report.readers:
        read = [c for c in cohort.cases if r.name in c.readers]
        assert r.n == len(read) == (10 if r.name == "alice" else 8)  # bob skipped two
        reader_ok = np.array([c.readers[r.name] == c.case.label for c in read])
        net_ok = np.array([by_study[c.study_uid]["predicted"] == c.case.label for c in read])
        cm = r.confusion
        assert cm.n == r.n
        assert cm.tp + cm.tn == int(reader_ok.sum())
        assert r.accuracy.value == (cm.tp + cm.tn) / cm.n
        assert r.sensitivity.value == cm.tp / (cm.tp + cm.fn)
        assert r.specificity.value == cm.tn / (cm.tn + cm.fp)
        assert r.network_accuracy.value == int(net_ok.sum()) / r.n
        assert r.network_confusion.tp + r.network_confusion.tn == int(net_ok.sum())
        assert r.both_correct == int((reader_ok & net_ok).sum())
        assert r.discordant_network_only == int((net_ok & ~reader_ok).sum())
        assert r.discordant_reader_only == int((reader_ok & ~net_ok).sum())
        assert r.both_wrong == int((~reader_ok & ~net_ok).sum())
        assert (
            r.both_correct + r.discordant_network_only + r.discordant_reader_only + (r.both_wrong)
            == r.n
        )
        # McNemar exact = two-sided binomial test on the discordant studies
        b, c = r.discordant_network_only, r.discordant_reader_only
        assert r.mcnemar_exact
        expected = stats.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
        assert r.mcnemar_p_value == pytest.approx(expected)
        # chi-square on correct / incorrect counts of network and reader
        table = np.array(
            [[net_ok.sum(), r.n - net_ok.sum()], [reader_ok.sum(), r.n - reader_ok.sum()]]
        )
        if (table.sum(axis=0) > 0).all():
            res = stats.chi2_contingency(table, correction=True)
            assert r.chi_square.chi2 == pytest.approx(res.statistic)
            assert r.chi_square.p_value == pytest.approx(res.pvalue)
        assert r.chi_square.model_accuracy == r.network_accuracy.value


def _numbers(data: Any, where: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        return [x for k, v in data.items() for x in _numbers(v, f"{where}.{k}")]
    if isinstance(data, list):
        return [x for i, v in enumerate(data) for x in _numbers(v, f"{where}[{i}]")]
    return [(where, data)]


def test_report_files_hold_every_number_and_open_offline(report: ClsReport, tmp_path: Path) -> None:
    files = write_report(report, tmp_path / "report")
    assert {f.name for f in files} == {"report.html", "report.json", *FIGURES}
    for name in FIGURES:
        assert (tmp_path / "report" / name).read_bytes()[:8] == PNG
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    missing = [
        path
        for path, value in _numbers(data)
        if value is None and not path.startswith(".readers") and "ci" not in path
    ]
    assert missing == []
    cm = data["confusion"]
    assert data["accuracy"]["value"] == (cm["tp"] + cm["tn"]) / cm["n"]
    assert data["sensitivity"]["value"] == cm["tp"] / (cm["tp"] + cm["fn"])
    assert data["specificity"]["value"] == cm["tn"] / (cm["tn"] + cm["fp"])
    assert data["auc"] == report.auc
    for key in ("ci_low", "ci_high"):
        for metric in ("accuracy", "sensitivity", "specificity"):
            assert isinstance(data[metric][key], float)
    assert isinstance(data["auc_ci_low"], float)
    assert isinstance(data["auc_ci_high"], float)
    for reader in data["readers"]:
        for key in ("accuracy", "sensitivity", "specificity", "network_accuracy"):
            assert reader[key]["value"] is not None
        assert reader["mcnemar_p_value"] is not None
        assert reader["chi_square"]["p_value"] is not None
    page = (tmp_path / "report" / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no CDN, no remote file
    assert "<script" not in page
    for name in FIGURES:
        assert f'src="{name}"' in page
    assert f"TP {cm['tp']}" in page
    assert f"TN {cm['tn']}" in page
    assert f"{report.accuracy.value:.3f}" in page
    assert "alice" in page
    assert "bob" in page
    assert "RESEARCH USE ONLY" in page
