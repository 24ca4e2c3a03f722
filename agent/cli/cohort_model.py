"""``train cls --cohort`` and ``evaluate cls --cohort``: the classifier trained and validated on a
site's labelling package (``liver-agent cohort export``); called by :mod:`agent.cli.model`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.markup import escape
from rich.table import Table

from agent.cli._common import console, err_console, fail
from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

T = TypeVar("T")

COHORT_HELP = (
    "Site cohort (--cohort OUT --labels labels.csv): the package 'liver-agent cohort export' "
    "wrote, with labels.csv filled in by the readers (label 1 = cirrhosis, 0 = none; optional "
    "reader_<name> columns with other radiologists' reads, 0/1 or empty). The split is 70/15/15 "
    "by patient_key, stratified by label; each class needs at least 3 patients."
)


def guard(action: Callable[[], T]) -> T:
    """Run ``action``; a pipeline error becomes a one-line CLI error (exit status 1)."""
    try:
        return action()
    except PipelineError as err:
        fail(escape(f"{err.message} [{err.code}]"))


def train_from_cohort(
    cohort_dir: Path,
    labels: Path | None,
    out: Path,
    config: Any,
    options: Any,
    *,
    progress: bool,
    overwrite: bool,
) -> Any:
    """Read the package, report the class balance and the split, train, write the bundle."""
    from pipeline.training.cohort import read_cohort
    from pipeline.training.cohort_train import plan_cohort_training, train_cohort_classifier

    if out.exists() and not overwrite:
        fail(escape(f"{out} exists; choose another folder or add --overwrite [bundle_exists]"))
    cohort = guard(lambda: read_cohort(cohort_dir, labels))
    plan = guard(lambda: plan_cohort_training(cohort, config.seed))
    print_plan(plan)
    return guard(
        lambda: train_cohort_classifier(
            cohort, plan, out, config, options, progress=progress, overwrite=overwrite
        )
    )


def print_plan(plan: Any) -> None:
    """Class balance of the cohort and of each part of the split (on stderr with the bars)."""
    c = plan.counts
    err_console.print(
        f"cohort {escape(plan.cohort_name)}: {c['studies']} studies of {c['patients']} patients; "
        f"class balance: {c['studies_cirrhosis']} cirrhosis / {c['studies_no_cirrhosis']} no "
        f"cirrhosis studies ({c['patients_cirrhosis']} / {c['patients_no_cirrhosis']} patients)",
        highlight=False,
    )
    table = Table(title="split by patient (70/15/15, stratified by label)")
    for column in ("part", "patients", "studies", "cirrhosis", "no cirrhosis"):
        table.add_column(column, justify="right")
    for part, values in plan.parts.items():
        table.add_row(
            part,
            str(values["patients"]),
            str(values["studies"]),
            str(values["cirrhosis"]),
            str(values["no_cirrhosis"]),
        )
    err_console.print(table)


def print_card(bundle: Any) -> None:
    """Validation and test metrics from the bundle's model card."""
    card = bundle.manifest.training.settings.get("model_card", {})
    table = Table(title="model card: metrics")
    for column in ("part", "n", "accuracy", "sensitivity", "specificity", "AUC"):
        table.add_column(column, justify="right")
    for part, m in card.get("metrics", {}).items():
        table.add_row(
            part,
            str(m["n"]),
            *(
                "n/a" if m[k] is None else f"{m[k]:.3f}"
                for k in ("accuracy", "sensitivity", "specificity", "auc")
            ),
        )
    console.print(table)


def evaluate_cohort(
    cohort_dir: Path, labels: Path | None, model: Path, out: Path, *, split: str, device: str
) -> Any:
    """Evaluate the bundle on the package's labelled studies and write the report."""
    from pipeline.bundle import load_bundle
    from pipeline.training.cls_report import classification_report
    from pipeline.training.cls_report_html import write_report
    from pipeline.training.cohort import read_cohort
    from pipeline.training.data import DataError
    from pipeline.training.evaluate import cases_for_split

    def run() -> Any:
        bundle = load_bundle(model)
        if bundle.manifest.task != "classification":
            fail(escape(f"{model} is a {bundle.manifest.task} bundle, not a classifier"))
        cohort = read_cohort(cohort_dir, labels)
        all_ids = [c.study_uid for c in cohort.cases]
        try:
            ids = set(cases_for_split(bundle, all_ids, split))
        except DataError as err:
            raise DataError(
                err.code,
                f"{err.message}. The bundle was not trained on this package (or on other "
                "labels of it): evaluate every labelled study with --split all (an external "
                "validation)",
            ) from err
        chosen = [c for c in cohort.cases if c.study_uid in ids]
        report = classification_report(bundle, chosen, cohort.readers, split=split, device=device)
        return report, write_report(report, out)

    return guard(run)


def print_report(report: Any, files: list[Path]) -> None:
    """The headline numbers of a cohort report and where its files are."""
    table = Table(title=f"cirrhosis classification ({report.split} studies, n={report.n})")
    for column in ("metric", "value", "95% CI"):
        table.add_column(column, justify="right")
    for label, p in (
        ("accuracy", report.accuracy),
        ("sensitivity", report.sensitivity),
        ("specificity", report.specificity),
    ):
        table.add_row(label, _fmt(p.value), _ci(p.ci_low, p.ci_high))
    table.add_row("AUC", _fmt(report.auc), _ci(report.auc_ci_low, report.auc_ci_high))
    console.print(table)
    cm = report.confusion
    console.print(f"confusion matrix: TP {cm.tp}  FN {cm.fn}  FP {cm.fp}  TN {cm.tn}")
    if report.readers:
        readers = Table(title="network vs readers (paired studies)")
        for column in ("reader", "n", "reader acc.", "network acc.", "chi2 p", "McNemar p"):
            readers.add_column(column, justify="right")
        for r in report.readers:
            readers.add_row(
                r.name,
                str(r.n),
                _fmt(r.accuracy.value),
                _fmt(r.network_accuracy.value),
                f"{r.chi_square.p_value:.4f}",
                f"{r.mcnemar_p_value:.4f}",
            )
        console.print(readers)
    for file in files:
        console.print(f"wrote {file}", highlight=False)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ci(low: float | None, high: float | None) -> str:
    return "n/a" if low is None or high is None else f"{low:.3f}-{high:.3f}"
