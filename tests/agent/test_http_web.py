"""The admin web page: server-rendered jobs table, job page, actions and offline assets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent.context import AgentContext, open_context
from agent.http.app import create_app
from storage.models import DeliveryStatus, Job, JobStatus
from tests.agent.http_data import AUTH, processed_job, queued_job, settings_for


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    context = open_context(settings_for(tmp_path))
    yield context
    context.engine.dispose()


@pytest.fixture
def client(ctx: AgentContext) -> TestClient:
    return TestClient(create_app(ctx), headers=AUTH)


def _rows(html: str) -> list[str]:
    return re.findall(r'<a href="/jobs/(\d+)">', html)


def test_jobs_page_lists_jobs_with_status_and_filters(
    client: TestClient, ctx: AgentContext
) -> None:
    done, _ = processed_job(ctx, accession="ACC-DONE")
    queued, _ = queued_job(ctx, accession="ACC-Q")
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert _rows(html) == [str(queued), str(done)]
    assert 'class="status status-done"' in html
    assert 'class="status status-queued"' in html
    assert "DEMO" in html
    assert "Research use only" in html
    assert 'data-refresh-url="/fragments/jobs?' in html
    filtered = client.get("/", params={"status": "done", "accession_number": ""}).text
    assert _rows(filtered) == [str(done)]
    assert '<option value="done" selected>' in filtered
    by_accession = client.get("/", params={"accession_number": "ACC-Q"}).text
    assert _rows(by_accession) == [str(queued)]
    bad = client.get("/", params={"created_from": "soon"}).text
    assert "is not a date" in bad
    fragment = client.get("/fragments/jobs", params={"status": "queued"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert _rows(fragment.text) == [str(queued)]


def test_jobs_page_pages(client: TestClient, ctx: AgentContext) -> None:
    ids = [queued_job(ctx, n=1)[0] for _ in range(3)]
    first = client.get("/", params={"limit": 2}).text
    assert _rows(first) == [str(ids[2]), str(ids[1])]
    assert "3 jobs, showing 1–2" in first
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&")).text
    assert _rows(second) == [str(ids[0])]
    assert 'rel="next"' not in second


def test_job_page_shows_result_selection_timings_timeline_and_outputs(
    client: TestClient, ctx: AgentContext
) -> None:
    job_id, datasets = processed_job(ctx, status=JobStatus.FAILED, delivery=DeliveryStatus.DEAD)
    html = client.get(f"/jobs/{job_id}").text
    assert f'src="/api/jobs/{job_id}/preview.png"' in html
    assert "RESEARCH USE ONLY" in html
    assert "DEMO MODEL" in html
    assert "cirrhosis" in html
    assert "0.830" in html
    assert "15,234 mm²" in html
    # why this series: the chosen one first and highlighted, with the reasons of each
    chosen = re.search(r'<tr class="chosen">(.*?)</tr>', html, re.DOTALL)
    assert chosen is not None
    assert str(datasets[0].SeriesInstanceUID) in chosen.group(1)
    assert "T2-weighted (TE 90 ms)" in chosen.group(1)
    assert "description says localizer" in html
    for stage in ("select", "load", "segment", "classify"):
        assert f"<td>{stage}</td>" in html
    assert "association_failed: PACS down" in html
    assert f'action="/jobs/{job_id}/retry"' in html
    assert f'action="/jobs/{job_id}/cancel"' not in html  # failed is final
    assert 'data-final="true"' in html
    assert "SEG" in html


def test_job_page_without_demo_has_no_demo_banner(client: TestClient, ctx: AgentContext) -> None:
    job_id, _ = processed_job(ctx, demo=False)
    html = client.get(f"/jobs/{job_id}").text
    assert "DEMO MODEL" not in html
    assert "RESEARCH USE ONLY" in html


def test_job_page_says_why_a_demo_classifier_withheld_the_finding(
    client: TestClient, ctx: AgentContext
) -> None:
    job_id, _ = processed_job(ctx, demo=True)
    why = "no cirrhosis finding: the classification model is a DEMO model"
    with ctx.sessions.begin() as session:
        job = session.get_one(Job, job_id)
        job.label = None
        job.probability = None
        job.details = {**(job.details or {}), "finding_withheld": why}
    html = client.get(f"/jobs/{job_id}").text
    finding = re.search(r"<dt>Finding</dt><dd>(.*?)</dd>", html, re.DOTALL)
    assert finding is not None
    assert "withheld" in finding.group(1)
    assert why in finding.group(1)
    assert "none yet" not in finding.group(1)


def test_retry_button_requeues_and_tells_what_happened(
    client: TestClient, ctx: AgentContext
) -> None:
    job_id, _ = processed_job(ctx, status=JobStatus.FAILED, delivery=DeliveryStatus.DEAD)
    response = client.post(f"/jobs/{job_id}/retry", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/jobs/{job_id}"
    page = client.get(f"/jobs/{job_id}").text
    assert "1 deliveries re-queued (pacs)" in page
    assert 'class="status status-delivering"' in page
    assert 'data-final="false"' in page
    again = client.get(f"/jobs/{job_id}").text
    assert "re-queued" not in again.split("<main")[0]  # the notice is shown once


def test_cancel_button_on_a_queued_job(client: TestClient, ctx: AgentContext) -> None:
    job_id, _ = queued_job(ctx)
    html = client.get(f"/jobs/{job_id}").text
    assert f'data-refresh-url="/fragments/jobs/{job_id}"' in html
    assert "No slice: the pipeline has not run yet" in html
    client.post(f"/jobs/{job_id}/cancel")
    with ctx.sessions() as session:
        assert session.get_one(Job, job_id).status == JobStatus.CANCELLED
    refused = client.post(f"/jobs/{job_id}/cancel").text
    assert "cancel not possible" in refused


def test_unknown_job_page_is_404(client: TestClient) -> None:
    response = client.get("/jobs/4242")
    assert response.status_code == 404
    assert "There is no job 4242" in response.text


def test_studies_page(client: TestClient, ctx: AgentContext) -> None:
    _, study_uid = queued_job(ctx, accession="ACC-S")
    html = client.get("/studies").text
    assert study_uid in html
    assert "ACC-S" in html


def test_page_loads_nothing_from_elsewhere(client: TestClient, ctx: AgentContext) -> None:
    job_id, _ = processed_job(ctx)
    for path in ("/", f"/jobs/{job_id}", "/studies", "/login"):
        response = client.get(path)
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert not re.search(r'(src|href)="(https?:)?//', response.text), path
    css = client.get("/static/style.css")
    assert css.status_code == 200
    assert "url(" not in css.text
    js = client.get("/static/app.js")
    assert js.status_code == 200
    assert not re.search(r"https?://", js.text)
