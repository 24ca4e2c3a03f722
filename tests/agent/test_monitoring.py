"""Monitoring with known inputs: 21 jobs written into a real SQLite file (20 with a finding and
a known truth, one not evaluated), scripted feedback (a verdict changed later, one label from a
report CSV), three inputs flagged as drift. The figures, Wilson intervals, weeks, alerts,
Prometheus gauges and the page are checked against values worked out by hand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent.context import AgentContext, open_context
from agent.http.app import create_app
from agent.monitoring import drift_flagged, monitoring_report, proportion
from agent.settings import MonitoringSettings
from tests.agent.http_data import AUTH, settings_for
from tests.agent.monitoring_data import MODEL, VERSION, make_jobs

LIMITS = {
    "min_feedback_cases": 20,
    "min_jobs": 20,
    "min_accuracy": 0.8,
    "max_positive_share": 0.5,
    "max_drift_share": 0.2,
}


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    context = open_context(settings_for(tmp_path, monitoring=LIMITS))
    yield context
    context.engine.dispose()


def test_wilson_interval_matches_the_formula() -> None:
    p = proportion(15, 20)
    assert (p.k, p.n, p.estimate) == (15, 20, 0.75)
    assert p.low == pytest.approx(0.531299, abs=1e-6)
    assert p.high == pytest.approx(0.888138, abs=1e-6)
    empty = proportion(0, 0)
    assert (empty.estimate, empty.low, empty.high) == (None, None, None)


def test_drift_is_read_defensively() -> None:
    assert drift_flagged({"drift": {"flagged": True, "reasons": []}})
    assert not drift_flagged({"drift": {"flagged": False}})
    assert not drift_flagged({"drift": "yes"})
    assert not drift_flagged({})
    assert not drift_flagged(None)


def test_known_jobs_give_the_expected_figures(ctx: AgentContext) -> None:
    _, weeks = make_jobs(ctx.sessions)
    with ctx.sessions() as session:
        report = monitoring_report(session, ctx.settings.monitoring)
    (model,) = report.models
    assert (model.model_name, model.model_version) == (MODEL, VERSION)
    assert (model.jobs, model.evaluated, model.with_finding, model.positive) == (21, 20, 20, 11)
    assert model.positive_share == pytest.approx(0.55)
    assert model.probability_histogram == [0, 9, 0, 0, 0, 0, 0, 0, 11, 0]
    assert model.not_evaluated == {"no_axial_t2": 1}
    assert model.drift_flagged == 3
    assert model.drift_share == pytest.approx(3 / 21)
    assert sum(d.studies for d in model.studies_per_day) == 21
    a = model.agreement
    assert (a.cases, a.true_positive, a.true_negative, a.false_positive, a.false_negative) == (
        20,
        8,
        7,
        3,
        2,
    )
    expected = {
        "accuracy": (15, 20, 0.75, 0.531299, 0.888138),
        "sensitivity": (8, 10, 0.8, 0.490162, 0.943318),
        "specificity": (7, 10, 0.7, 0.396778, 0.892209),
    }
    for name, (k, n, estimate, low, high) in expected.items():
        figure = getattr(a, name)
        assert (figure.k, figure.n) == (k, n), name
        assert figure.estimate == pytest.approx(estimate)
        assert figure.low == pytest.approx(low, abs=1e-6), name
        assert figure.high == pytest.approx(high, abs=1e-6), name
    assert [w.week for w in model.weekly] == weeks
    first, second = (w.agreement for w in model.weekly)
    assert (first.accuracy.k, first.accuracy.n) == (8, 10)
    assert (first.sensitivity.k, first.sensitivity.n) == (5, 6)
    assert first.sensitivity.low == pytest.approx(0.436497, abs=1e-6)
    assert (second.accuracy.k, second.accuracy.n) == (7, 10)
    assert (second.specificity.k, second.specificity.n) == (4, 6)
    assert second.specificity.high == pytest.approx(0.903229, abs=1e-6)
    kinds = {alert.kind: alert for alert in report.alerts}
    assert set(kinds) == {"accuracy_low", "positive_share_high"}
    assert kinds["accuracy_low"].value == pytest.approx(0.75)
    assert kinds["accuracy_low"].cases == 20
    assert kinds["positive_share_high"].value == pytest.approx(0.55)


def test_alerts_wait_for_enough_cases(ctx: AgentContext) -> None:
    make_jobs(ctx.sessions)
    limits = MonitoringSettings(**{**LIMITS, "min_feedback_cases": 21, "max_drift_share": 0.1})
    with ctx.sessions() as session:
        report = monitoring_report(session, limits)
    assert {a.kind for a in report.alerts} == {"positive_share_high", "drift_share_high"}


def test_api_page_and_gauges(ctx: AgentContext) -> None:
    client = TestClient(create_app(ctx), base_url="http://127.0.0.1:8080")
    ready_before = client.get("/readyz", headers=AUTH).status_code
    assert client.get("/api/alerts", headers=AUTH).json()["alerts"] == []
    make_jobs(ctx.sessions)
    body = client.get("/api/monitoring", headers=AUTH).json()
    (model,) = body["models"]
    assert model["agreement"]["accuracy"]["estimate"] == pytest.approx(0.75)
    alerts = client.get("/api/alerts", headers=AUTH).json()["alerts"]
    assert sorted(a["kind"] for a in alerts) == ["accuracy_low", "positive_share_high"]
    assert client.get("/readyz", headers=AUTH).status_code == ready_before  # alerts: not down
    metrics = client.get("/metrics", headers=AUTH).text
    labels = f'model="{MODEL}",version="{VERSION}"'
    assert f"liver_agent_model_accuracy{{{labels}}} 0.75" in metrics
    assert f"liver_agent_model_sensitivity{{{labels}}} 0.8" in metrics
    assert f"liver_agent_model_drift_flagged{{{labels}}} 3.0" in metrics
    assert f"liver_agent_model_feedback_cases{{{labels}}} 20.0" in metrics
    assert f'liver_agent_alerts_active{{kind="accuracy_low",{labels}}} 1.0' in metrics
    page = client.get("/monitoring", headers=AUTH)
    assert page.status_code == 200
    assert "75.0 %" in page.text
    assert "53.1–88.8 %" in page.text
    assert page.text.count("<svg") == 3  # per day, histogram, weekly accuracy
    assert "accuracy low" in page.text
    assert "http://" not in page.text.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_cli_prints_the_figures_and_fails_on_alert(tmp_path: Path, ctx: AgentContext) -> None:
    import json

    from typer.testing import CliRunner

    from agent.cli import app as cli_app
    from tests.cli_output import unwrapped

    make_jobs(ctx.sessions)
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"database:\n  url: {ctx.settings.database.url}\nspool:\n  path: {tmp_path / 'sp'}\n"
        "monitoring:\n  min_accuracy: 0.8\n  max_positive_share: null\n"
    )
    runner = CliRunner()
    shown = runner.invoke(cli_app, ["monitoring", "-c", str(config)])
    assert shown.exit_code == 0, shown.output
    text = unwrapped(shown.output)
    assert "75.0 % (53.1-88.8, 15/20)" in text
    assert "ALERT accuracy_low" in text
    failing = runner.invoke(cli_app, ["monitoring", "--fail-on-alert", "--json", "-c", str(config)])
    assert failing.exit_code == 1
    body = json.loads(failing.stdout)
    assert [a["kind"] for a in body["alerts"]] == ["accuracy_low"]
    assert body["models"][0]["agreement"]["sensitivity"]["k"] == 8


def test_a_study_run_twice_the_same_day_counts_once_per_day(ctx: AgentContext) -> None:
    from storage.models import Job, JobStatus, Study, utcnow

    when = utcnow()
    with ctx.sessions.begin() as session:
        study = Study(study_instance_uid="1.2.826.0.2", accession_number="TWICE")
        session.add(study)
        session.flush()
        for version in (1, 2):
            session.add(
                Job(
                    study_id=study.id,
                    version=version,
                    status=JobStatus.DONE,
                    created_at=when,
                    evaluated=True,
                    label="no cirrhosis",
                    probability=0.2,
                    model_name="m",
                    model_version="1",
                )
            )
    with ctx.sessions() as session:
        (model,) = monitoring_report(session, ctx.settings.monitoring).models
    assert model.jobs == 2
    assert [(d.day, d.studies) for d in model.studies_per_day] == [(when.date().isoformat(), 1)]
