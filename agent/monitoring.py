"""Monitoring of each model and version: what it was given and what it said (studies per day,
share of positive findings, probability histogram, not-evaluated reasons, input drift flagged)
and how it agrees with the radiologists' feedback (accuracy, sensitivity, specificity with
95 % Wilson score intervals, overall and per ISO week); alerts where a figure crosses a
threshold of the settings (``monitoring``).

Jobs count by the model that classified them (``Job.model_name`` / ``model_version``; jobs
that never reached the classifier count under ``(none)``), over the last
``monitoring.window_days`` days by creation time. The verdict of a job is its newest feedback
(``agent.feedback``). Input drift is what the drift check stored in
``Job.details["drift"] = {"flagged": bool, "reasons": [...]}``, absent on older jobs.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from pydantic import BaseModel, Field
from scipy.stats import binomtest
from sqlalchemy.orm import Session

from agent.feedback import POSITIVE_LABEL
from agent.settings import MonitoringSettings
from storage.models import utcnow
from storage.monitoring import MonitoredJob, monitored_jobs, verdicts_since

HISTOGRAM_BINS = 10
NO_MODEL = "(none)"
CONFIDENCE = 0.95


class Proportion(BaseModel):
    """``k`` of ``n`` with its 95 % Wilson score interval; all None when ``n`` is 0."""

    k: int
    n: int
    estimate: float | None
    low: float | None
    high: float | None


def proportion(k: int, n: int) -> Proportion:
    """``k / n`` with the Wilson score interval (``scipy.stats.binomtest(...).proportion_ci``)."""
    if n == 0:
        return Proportion(k=0, n=0, estimate=None, low=None, high=None)
    ci = binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Proportion(k=k, n=n, estimate=k / n, low=float(ci.low), high=float(ci.high))


class Agreement(BaseModel):
    """Findings against the verdicts in force (truth: the reader's reference)."""

    cases: int
    true_positive: int
    true_negative: int
    false_positive: int
    false_negative: int
    accuracy: Proportion
    sensitivity: Proportion
    specificity: Proportion


class WeekAgreement(BaseModel):
    week: str = Field(description="ISO week of the jobs' creation, e.g. 2026-W49")
    agreement: Agreement


class DayCount(BaseModel):
    day: str
    studies: int


class ModelMonitoring(BaseModel):
    """The figures of one model version over the window."""

    model_name: str
    model_version: str
    jobs: int = Field(description="jobs the pipeline ran on")
    evaluated: int
    with_finding: int
    positive: int
    positive_share: float | None
    studies_per_day: list[DayCount]
    probability_histogram: list[int] = Field(description=f"{HISTOGRAM_BINS} bins over [0, 1]")
    not_evaluated: dict[str, int] = Field(description="reason code: jobs")
    drift_flagged: int
    drift_share: float | None
    agreement: Agreement
    weekly: list[WeekAgreement]


class Alert(BaseModel):
    """A figure past its threshold."""

    model_name: str
    model_version: str
    kind: str = Field(description="accuracy_low, sensitivity_low, specificity_low, ...")
    value: float
    threshold: float
    cases: int
    message: str


class MonitoringReport(BaseModel):
    generated_at: dt.datetime
    window_days: int
    models: list[ModelMonitoring]
    alerts: list[Alert]


@dataclass
class _Tally:
    tp: int = 0
    tn: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, predicted: bool, truth: bool) -> None:
        if predicted and truth:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif truth:
            self.fn += 1
        else:
            self.tn += 1

    def agreement(self) -> Agreement:
        cases = self.tp + self.tn + self.fp + self.fn
        return Agreement(
            cases=cases,
            true_positive=self.tp,
            true_negative=self.tn,
            false_positive=self.fp,
            false_negative=self.fn,
            accuracy=proportion(self.tp + self.tn, cases),
            sensitivity=proportion(self.tp, self.tp + self.fn),
            specificity=proportion(self.tn, self.tn + self.fp),
        )


def drift_flagged(details: dict[str, Any] | None) -> bool:
    """True when the job's details say its input drifted (read defensively: may be absent);
    the report reads the same key in SQL (``storage.monitoring``)."""
    drift = (details or {}).get("drift")
    return isinstance(drift, dict) and drift.get("flagged") is True


def _iso_week(when: dt.datetime) -> str:
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


def _histogram(probabilities: Iterable[float]) -> list[int]:
    bins = [0] * HISTOGRAM_BINS
    for p in probabilities:
        index = min(max(int(p * HISTOGRAM_BINS), 0), HISTOGRAM_BINS - 1)
        bins[index] += 1
    return bins


def _model_figures(
    name: str, version: str, jobs: list[MonitoredJob], verdicts: dict[int, bool]
) -> ModelMonitoring:
    evaluated = [j for j in jobs if j.evaluated]
    findings = [(j, None if j.label is None else j.label == POSITIVE_LABEL) for j in jobs]
    with_finding = [(j, p) for j, p in findings if p is not None]
    positive = sum(1 for _, p in with_finding if p)
    # a study re-run (a new job version) the same day counts once
    studies_by_day = {(j.created_at.date().isoformat(), j.study_id) for j in jobs}
    per_day = Counter(day for day, _ in studies_by_day)
    not_evaluated = Counter(j.reason_code or "unknown" for j in jobs if j.evaluated is False)
    flagged = sum(1 for j in jobs if drift_flagged({"drift": j.drift}))
    overall = _Tally()
    weekly: defaultdict[str, _Tally] = defaultdict(_Tally)
    for job, predicted in with_finding:
        truth = verdicts.get(job.id)
        if truth is None or predicted is None:
            continue
        overall.add(predicted, truth)
        weekly[_iso_week(job.created_at)].add(predicted, truth)
    return ModelMonitoring(
        model_name=name,
        model_version=version,
        jobs=len(jobs),
        evaluated=len(evaluated),
        with_finding=len(with_finding),
        positive=positive,
        positive_share=positive / len(with_finding) if with_finding else None,
        studies_per_day=[DayCount(day=d, studies=n) for d, n in sorted(per_day.items())],
        probability_histogram=_histogram(
            j.probability for j, _ in with_finding if j.probability is not None
        ),
        not_evaluated=dict(sorted(not_evaluated.items())),
        drift_flagged=flagged,
        drift_share=flagged / len(jobs) if jobs else None,
        agreement=overall.agreement(),
        weekly=[WeekAgreement(week=w, agreement=t.agreement()) for w, t in sorted(weekly.items())],
    )


def alerts_for(model: ModelMonitoring, limits: MonitoringSettings) -> list[Alert]:
    """The alerts one model raises: agreement below a minimum once it has
    ``min_feedback_cases`` verdicts; shares above a maximum once it has ``min_jobs`` jobs."""
    found: list[Alert] = []

    def add(kind: str, value: float, threshold: float, cases: int, what: str) -> None:
        found.append(
            Alert(
                model_name=model.model_name,
                model_version=model.model_version,
                kind=kind,
                value=value,
                threshold=threshold,
                cases=cases,
                message=f"{model.model_name} {model.model_version}: {what} {value:.3f} "
                f"(threshold {threshold:.3f}, {cases} cases)",
            )
        )

    agreement = model.agreement
    if agreement.cases >= limits.min_feedback_cases:
        for kind, figure, minimum in (
            ("accuracy_low", agreement.accuracy, limits.min_accuracy),
            ("sensitivity_low", agreement.sensitivity, limits.min_sensitivity),
            ("specificity_low", agreement.specificity, limits.min_specificity),
        ):
            if minimum is not None and figure.estimate is not None and figure.estimate < minimum:
                add(kind, figure.estimate, minimum, figure.n, kind.split("_")[0] + " is")
    if model.with_finding >= limits.min_jobs and model.positive_share is not None:
        maximum = limits.max_positive_share
        if maximum is not None and model.positive_share > maximum:
            add(
                "positive_share_high",
                model.positive_share,
                maximum,
                model.with_finding,
                "share of positive findings is",
            )
    if model.jobs >= limits.min_jobs and model.drift_share is not None:
        maximum = limits.max_drift_share
        if maximum is not None and model.drift_share > maximum:
            add("drift_share_high", model.drift_share, maximum, model.jobs, "share of drift is")
    return found


def monitoring_report(
    session: Session, limits: MonitoringSettings, *, now: dt.datetime | None = None
) -> MonitoringReport:
    """Every model version's figures over the window, and the alerts they raise."""
    now = now or utcnow()
    since = now - dt.timedelta(days=limits.window_days)
    jobs = monitored_jobs(session, since)
    groups: dict[tuple[str, str], list[MonitoredJob]] = defaultdict(list)
    for job in jobs:
        groups[(job.model_name or NO_MODEL, job.model_version or "")].append(job)
    verdicts = verdicts_since(session, since)
    models = [
        _model_figures(name, version, members, verdicts)
        for (name, version), members in sorted(groups.items())
    ]
    alerts = [a for m in models for a in alerts_for(m, limits)]
    return MonitoringReport(
        generated_at=now, window_days=limits.window_days, models=models, alerts=alerts
    )


def prometheus_families(report: MonitoringReport) -> list[Metric]:
    """Gauges of the report, labelled by model and version (read at scrape time)."""
    labels = ["model", "version"]
    families = {
        "jobs": GaugeMetricFamily(
            "liver_agent_model_jobs", "Jobs the pipeline ran on, in the window", labels=labels
        ),
        "positive_share": GaugeMetricFamily(
            "liver_agent_model_positive_share",
            "Share of positive findings among jobs with a finding, in the window",
            labels=labels,
        ),
        "drift_flagged": GaugeMetricFamily(
            "liver_agent_model_drift_flagged",
            "Jobs whose input was flagged as drift, in the window",
            labels=labels,
        ),
        "feedback_cases": GaugeMetricFamily(
            "liver_agent_model_feedback_cases",
            "Jobs with a finding and a verdict, in the window",
            labels=labels,
        ),
        "accuracy": GaugeMetricFamily(
            "liver_agent_model_accuracy", "Accuracy against feedback", labels=labels
        ),
        "sensitivity": GaugeMetricFamily(
            "liver_agent_model_sensitivity", "Sensitivity against feedback", labels=labels
        ),
        "specificity": GaugeMetricFamily(
            "liver_agent_model_specificity", "Specificity against feedback", labels=labels
        ),
    }
    for m in report.models:
        key = [m.model_name, m.model_version]
        families["jobs"].add_metric(key, m.jobs)
        families["drift_flagged"].add_metric(key, m.drift_flagged)
        families["feedback_cases"].add_metric(key, m.agreement.cases)
        if m.positive_share is not None:
            families["positive_share"].add_metric(key, m.positive_share)
        for name in ("accuracy", "sensitivity", "specificity"):
            figure: Proportion = getattr(m.agreement, name)
            if figure.estimate is not None:
                families[name].add_metric(key, figure.estimate)
    active = GaugeMetricFamily(
        "liver_agent_alerts_active",
        "Monitoring alerts in force (1 per alert), see GET /api/alerts",
        labels=[*labels, "kind"],
    )
    for alert in report.alerts:
        active.add_metric([alert.model_name, alert.model_version, alert.kind], 1)
    return [*families.values(), active]
