"""Monitoring over HTTP: ``GET /api/monitoring`` (every model version's figures), ``GET
/api/alerts`` (the alerts in force; ``/readyz`` does not change with them) and the
``/monitoring`` page with server-drawn SVG charts (``agent.http.charts``)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from agent.context import AgentContext
from agent.http.charts import bar_chart, interval_chart
from agent.http.deps import CtxDep, SessionDep, require_login, require_token
from agent.http.web import _page
from agent.monitoring import (
    HISTOGRAM_BINS,
    Alert,
    ModelMonitoring,
    MonitoringReport,
    monitoring_report,
    prometheus_families,
)

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["monitoring"], dependencies=[Depends(require_token)])
pages = APIRouter(include_in_schema=False, dependencies=[Depends(require_login)])


class AlertList(BaseModel):
    generated_at: dt.datetime
    alerts: list[Alert]


@router.get("/monitoring", response_model=MonitoringReport, summary="Monitoring per model")
def api_monitoring(ctx: CtxDep, session: SessionDep) -> MonitoringReport:
    """Per model and version over ``monitoring.window_days``: studies per day, share positive,
    probability histogram, not-evaluated reasons, drift flagged, and against feedback accuracy,
    sensitivity and specificity with 95 % Wilson intervals, overall and per ISO week."""
    return monitoring_report(session, ctx.settings.monitoring)


@router.get("/alerts", response_model=AlertList, summary="Monitoring alerts in force")
def api_alerts(ctx: CtxDep, session: SessionDep) -> AlertList:
    """Figures past the thresholds of ``monitoring`` in the settings (empty when none)."""
    report = monitoring_report(session, ctx.settings.monitoring)
    return AlertList(generated_at=report.generated_at, alerts=report.alerts)


def _charts(model: ModelMonitoring) -> dict[str, Any]:
    days = [(d.day[5:], d.studies) for d in model.studies_per_day]
    bins = [(f"{i / HISTOGRAM_BINS:.1f}", n) for i, n in enumerate(model.probability_histogram)]
    weeks = [
        (
            w.week[5:],
            w.agreement.accuracy.estimate,
            w.agreement.accuracy.low,
            w.agreement.accuracy.high,
        )
        for w in model.weekly
        if w.agreement.accuracy.estimate is not None
    ]
    return {
        "per_day": bar_chart(
            f"Studies per day, {model.model_name}", days, every=max(len(days) // 10, 1)
        )
        if days
        else None,
        "histogram": bar_chart(f"Probabilities, {model.model_name}", bins, every=2),
        "weekly": interval_chart(
            f"Accuracy per week with 95% interval, {model.model_name}",
            [
                (w, e, lo, hi)
                for w, e, lo, hi in weeks
                if lo is not None and hi is not None and e is not None
            ],
        )
        if weeks
        else None,
    }


@pages.get("/monitoring", response_class=HTMLResponse)
def monitoring_page(request: Request, ctx: CtxDep, session: SessionDep) -> Response:
    report = monitoring_report(session, ctx.settings.monitoring)
    return _page(
        request,
        "monitoring.html",
        {
            "report": report,
            "charts": [_charts(m) for m in report.models],
            "limits": ctx.settings.monitoring,
        },
    )


GAUGES_MAX_AGE_S = 30.0


def install_gauges(ctx: AgentContext) -> None:
    """Serve the per-model monitoring gauges in ``/metrics``: computed at scrape time, at most
    once every ``GAUGES_MAX_AGE_S`` seconds (the report reads every job of the window; see
    docs/benchmarks.md)."""
    lock = threading.Lock()
    cache: dict[str, Any] = {"at": -GAUGES_MAX_AGE_S, "families": []}

    def families() -> list[Any]:
        with lock:
            if time.monotonic() - cache["at"] < GAUGES_MAX_AGE_S:
                return list(cache["families"])
            try:
                with ctx.sessions() as session:
                    report = monitoring_report(session, ctx.settings.monitoring)
            except SQLAlchemyError as err:  # /metrics still answers; /readyz says why
                logger.warning("monitoring gauges skipped: %s", err)
                return []
            cache["families"] = prometheus_families(report)
            cache["at"] = time.monotonic()
            return list(cache["families"])

    ctx.metrics.set_model_monitoring_source(families)
