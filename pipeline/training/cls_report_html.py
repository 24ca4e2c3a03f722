"""The validation report's files: ``report.json``, ``report.html`` and its PNG figures (ROC
curve, calibration curve, confusion matrix) drawn with matplotlib; no script, no CDN: the
folder opens offline in any browser."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.training.cls_report import ClsReport, Confusion, Proportion

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
FIGURES = ("roc.png", "calibration.png", "confusion.png")


def _figure() -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(4.2, 4.0), dpi=100, layout="constrained")


def _roc_png(report: ClsReport, file: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1)
    if report.roc["fpr"]:
        ax.plot(report.roc["fpr"], report.roc["tpr"], color="C0", linewidth=2, drawstyle="default")
    title = "ROC" if report.auc is None else f"ROC, AUC {report.auc:.3f}"
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="1 - specificity", ylabel="sensitivity")
    ax.set_title(title)
    fig.savefig(file)


def _calibration_png(report: ClsReport, file: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1)
    cal = report.calibration
    ax.plot(cal["mean_predicted"], cal["fraction_positive"], marker="o", color="C1")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="mean predicted probability",
        ylabel="fraction labelled cirrhosis",
    )
    ax.set_title(f"calibration, Brier {cal['brier_score']:.3f}")
    fig.savefig(file)


def _confusion_png(report: ClsReport, file: Path) -> None:
    cm = report.confusion
    fig = _figure()
    ax = fig.add_subplot()
    cells = [[cm.tp, cm.fn], [cm.fp, cm.tn]]
    ax.imshow(cells, cmap="Blues")
    top = max(max(row) for row in cells)
    for r, row in enumerate(cells):
        for c, value in enumerate(row):
            colour = "white" if top and value > top / 2 else "black"
            ax.text(c, r, str(value), ha="center", va="center", fontsize=16, color=colour)
    ax.set_xticks([0, 1], labels=["cirrhosis", "no cirrhosis"])
    ax.set_yticks([0, 1], labels=["cirrhosis", "no cirrhosis"])
    ax.set(xlabel="network", ylabel="label (readers)")
    ax.set_title(f"confusion matrix, n={cm.n}")
    fig.savefig(file)


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _prop_row(label: str, p: Proportion) -> str:
    ci = "n/a" if p.ci_low is None else f"{_num(p.ci_low)} - {_num(p.ci_high)}"
    return (
        f"<tr><th>{html.escape(label)}</th><td>{_num(p.value)}</td><td>{p.k} / {p.n}</td>"
        f"<td>{ci}</td></tr>"
    )


def _confusion_table(cm: Confusion) -> str:
    return (
        "<table><tr><th></th><th>network: cirrhosis</th><th>network: no cirrhosis</th></tr>"
        f"<tr><th>label: cirrhosis</th><td>TP {cm.tp}</td><td>FN {cm.fn}</td></tr>"
        f"<tr><th>label: no cirrhosis</th><td>FP {cm.fp}</td><td>TN {cm.tn}</td></tr></table>"
    )


def _readers_html(report: ClsReport) -> str:
    if not report.readers:
        return "<p>No reader_&lt;name&gt; columns with reads in the labels file.</p>"
    rows = []
    for r in report.readers:
        rows.append(
            f"<tr><th>{html.escape(r.name)}</th><td>{r.n}</td>"
            f"<td>{_num(r.accuracy.value)}</td><td>{_num(r.sensitivity.value)}</td>"
            f"<td>{_num(r.specificity.value)}</td><td>{_num(r.network_accuracy.value)}</td>"
            f"<td>{_num(r.chi_square.chi2)}</td><td>{_num(r.chi_square.p_value, 4)}</td>"
            f"<td>{r.discordant_network_only} / {r.discordant_reader_only}</td>"
            f"<td>{_num(r.mcnemar_p_value, 4)}{' (exact)' if r.mcnemar_exact else ''}</td></tr>"
        )
    return (
        "<table><tr><th>reader</th><th>studies read</th><th>accuracy</th><th>sensitivity</th>"
        "<th>specificity</th><th>network accuracy (same studies)</th><th>chi-square</th>"
        "<th>chi-square p</th><th>discordant: network right only / reader right only</th>"
        "<th>McNemar p</th></tr>" + "".join(rows) + "</table>"
        "<p>Chi-square: network vs reader proportions correct (2x2, Yates correction), the "
        "test of the published study. McNemar: the same studies read by both (paired); exact "
        "binomial test under 25 discordant studies.</p>"
    )


def render_html(report: ClsReport) -> str:
    """The report page (figures referenced by file name, beside it)."""
    demo = " <strong>DEMO</strong>" if report.model_demo else ""
    auc_ci = (
        "n/a"
        if report.auc_ci_low is None
        else f"{_num(report.auc_ci_low)} - {_num(report.auc_ci_high)}"
    )
    figures = "".join(
        f'<figure><img src="{name}" alt="{name[:-4]}" width="420"></figure>' for name in FIGURES
    )
    title = f"Cirrhosis classifier validation: {report.model_name} {report.model_version}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; }}
table {{ border-collapse: collapse; margin: .6rem 0 1.2rem; }}
th, td {{ border: 1px solid #d5dae0; padding: .3rem .6rem; text-align: right; }}
th {{ background: #f6f7f9; }} figure {{ display: inline-block; margin: 0 1rem 1rem 0; }}
</style></head><body>
<h1>{html.escape(title)}{demo}</h1>
<p>RESEARCH USE ONLY. {report.n} studies ({html.escape(report.split)} split), threshold
{report.threshold:g}; 95 % intervals: Wilson score for proportions, percentile bootstrap
({report.auc_bootstrap["used"]} of {report.auc_bootstrap["resamples"]} resamples, seed
{report.auc_bootstrap["seed"]}) for the AUC.</p>
<h2>Network</h2>
<table><tr><th>metric</th><th>value</th><th>k / n</th><th>95% CI</th></tr>
{_prop_row("accuracy", report.accuracy)}
{_prop_row("sensitivity", report.sensitivity)}
{_prop_row("specificity", report.specificity)}
<tr><th>AUC</th><td>{_num(report.auc)}</td><td></td><td>{auc_ci}</td></tr>
<tr><th>Brier score</th><td>{_num(report.calibration["brier_score"])}</td><td></td><td></td></tr>
</table>
<h2>Confusion matrix</h2>
{_confusion_table(report.confusion)}
{figures}
<h2>Readers</h2>
{_readers_html(report)}
</body></html>
"""


def write_report(report: ClsReport, out: Path) -> list[Path]:
    """Write ``report.json``, the three PNG figures and ``report.html`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    _roc_png(report, out / FIGURES[0])
    _calibration_png(report, out / FIGURES[1])
    _confusion_png(report, out / FIGURES[2])
    data: dict[str, Any] = report.to_json()
    (out / REPORT_JSON).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out / REPORT_HTML).write_text(render_html(report), encoding="utf-8")
    return [out / REPORT_HTML, out / REPORT_JSON, *(out / f for f in FIGURES)]
