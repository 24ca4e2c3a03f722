"""Radiologist feedback: through the API and the job page's form with the caller's identity,
refused to viewers and on jobs without a finding, kept append-only, and imported from a CSV of
report labels with clear errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.exc import DatabaseError
from typer.testing import CliRunner

from agent.access import Role, create_token
from agent.cli import app as cli_app
from agent.context import AgentContext, open_context
from agent.feedback import REPORT_IMPORT_USER, FeedbackError, import_labels
from agent.http.app import create_app
from agent.http.auth import COOKIE_NAME
from storage import feedback as store
from storage.models import Feedback, Job
from tests.agent.http_data import AUTH, processed_job, queued_job, settings_for
from tests.cli_output import unwrapped


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    context = open_context(settings_for(tmp_path))
    yield context
    context.engine.dispose()


@pytest.fixture
def client(ctx: AgentContext) -> TestClient:
    return TestClient(create_app(ctx), base_url="http://127.0.0.1:8080")


def _bearer(ctx: AgentContext, name: str, role: Role) -> dict[str, str]:
    with ctx.sessions.begin() as session:
        _, token = create_token(session, name, role, created_by="test")
    return {"Authorization": f"Bearer {token}"}


def test_api_feedback_lands_with_the_token_name(client: TestClient, ctx: AgentContext) -> None:
    job_id, _ = processed_job(ctx)  # finding: cirrhosis
    reader = _bearer(ctx, "dr-grey", Role.READER)
    body = {"agree": False, "wrong_outline": True, "comment": "caudate hypertrophy absent"}
    made = client.post(f"/api/jobs/{job_id}/feedback", json=body, headers=reader)
    assert made.status_code == 201, made.text
    out = made.json()
    assert (out["user"], out["source"], out["agree"]) == ("dr-grey", "api", False)
    assert (out["reference_positive"], out["wrong_outline"], out["wrong_slice"]) == (
        False,
        True,
        False,
    )
    shared = client.post(f"/api/jobs/{job_id}/feedback", json={"agree": True}, headers=AUTH)
    assert shared.json()["user"] == "shared-token"
    listed = client.get(f"/api/jobs/{job_id}/feedback", headers=reader).json()
    assert [(f["user"], f["agree"]) for f in listed["feedback"]] == [
        ("shared-token", True),
        ("dr-grey", False),
    ]


def test_a_viewer_gets_403_and_nothing_is_recorded(client: TestClient, ctx: AgentContext) -> None:
    job_id, _ = processed_job(ctx)
    viewer = _bearer(ctx, "student", Role.VIEWER)
    refused = client.post(f"/api/jobs/{job_id}/feedback", json={"agree": True}, headers=viewer)
    assert refused.status_code == 403
    assert "reader" in refused.json()["detail"]
    page = client.post(f"/jobs/{job_id}/feedback", data={"verdict": "agree"}, headers=viewer)
    assert page.status_code == 403
    with ctx.sessions() as session:
        assert store.feedback_of_job(session, job_id) == []
    shown = client.get(f"/jobs/{job_id}", headers=viewer)
    assert 'action="/jobs/' + str(job_id) + '/feedback"' not in shown.text
    assert "needs the role reader" in shown.text


def test_no_feedback_on_a_job_without_a_finding(client: TestClient, ctx: AgentContext) -> None:
    job_id, _ = queued_job(ctx)
    answer = client.post(f"/api/jobs/{job_id}/feedback", json={"agree": True}, headers=AUTH)
    assert answer.status_code == 409
    assert answer.json()["code"] == "no_finding"
    missing = client.post("/api/jobs/999/feedback", json={"agree": True}, headers=AUTH)
    assert missing.status_code == 404


def test_the_job_page_form_records_the_logged_in_reader(
    client: TestClient, ctx: AgentContext
) -> None:
    job_id, _ = processed_job(ctx)
    with ctx.sessions.begin() as session:
        _, token = create_token(session, "dr-web", Role.READER, created_by="test")
    login = client.post("/login", data={"token": token, "next": "/"}, follow_redirects=False)
    web = TestClient(client.app, base_url="http://127.0.0.1:8080")
    web.cookies.set(COOKIE_NAME, login.cookies[COOKIE_NAME])
    page = web.get(f"/jobs/{job_id}")
    assert f'action="/jobs/{job_id}/feedback"' in page.text
    sent = web.post(
        f"/jobs/{job_id}/feedback",
        data={"verdict": "agree", "wrong_slice": "1", "comment": "fine"},
        headers={"Origin": "http://127.0.0.1:8080"},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    with ctx.sessions() as session:
        (row,) = store.feedback_of_job(session, job_id)
    assert (row.user, row.source, row.agree, row.wrong_slice, row.comment) == (
        "dr-web",
        "web",
        True,
        True,
        "fine",
    )
    shown = web.get(f"/jobs/{job_id}")
    assert "dr-web" in shown.text
    assert "recorded as dr-web" in shown.text  # the flash message
    other = web.post(
        f"/jobs/{job_id}/feedback",
        data={"verdict": "agree"},
        headers={"Origin": "http://evil.example"},
    )
    assert other.status_code == 403


def test_feedback_rows_cannot_be_changed(ctx: AgentContext) -> None:
    job_id, _ = processed_job(ctx)
    with ctx.sessions.begin() as session:
        store.add_feedback(
            session, job_id=job_id, agree=True, reference_positive=True, user="a", source="api"
        )
    with pytest.raises(DatabaseError, match="append-only"), ctx.sessions.begin() as session:
        session.execute(update(Feedback).values(agree=False))


def test_import_labels_from_reports(ctx: AgentContext) -> None:
    positive, _ = processed_job(ctx, accession="R-1")  # finding: cirrhosis
    negative, _ = processed_job(ctx, accession="R-2")
    with ctx.sessions.begin() as session:
        session.get_one(Job, negative).label = "no cirrhosis"
    with ctx.sessions.begin() as session:
        labels = import_labels(session, "accession,finding\nR-1,1\nR-2,1\n")
    assert [(x.accession_number, x.job_id, x.agree) for x in labels] == [
        ("R-1", positive, True),
        ("R-2", negative, False),
    ]
    with ctx.sessions() as session:
        latest = store.latest_feedback(session)
    assert {k: (v.user, v.source, v.reference_positive) for k, v in latest.items()} == {
        positive: (REPORT_IMPORT_USER, "import", True),
        negative: (REPORT_IMPORT_USER, "import", True),
    }


def test_import_refuses_unknown_accessions_and_bad_labels_whole(ctx: AgentContext) -> None:
    processed_job(ctx, accession="R-1")
    queued_job(ctx, accession="R-3")
    text = "accession,finding\nR-1,1\nNOPE,0\nR-1,yes\n,1\nR-3,0\n"
    with pytest.raises(FeedbackError) as caught, ctx.sessions.begin() as session:
        import_labels(session, text)
    message = caught.value.message
    assert caught.value.code == "labels_invalid"
    assert "line 3: unknown accession NOPE" in message
    assert "line 4: accession R-1: the finding must be 0 or 1, not 'yes'" in message
    assert "line 5: the accession is empty" in message
    assert "line 6: accession R-3: no job of it has a finding yet" in message
    with ctx.sessions() as session:
        assert store.latest_feedback(session) == {}  # nothing recorded, not even line 2
    with pytest.raises(FeedbackError, match="header"), ctx.sessions.begin() as session:
        import_labels(session, "acc;finding\nR-1;1\n")


def test_cli_feedback_import(tmp_path: Path, ctx: AgentContext) -> None:
    processed_job(ctx, accession="C-1")
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"database:\n  url: {ctx.settings.database.url}\nspool:\n  path: {tmp_path / 'sp'}\n"
    )
    good, bad = tmp_path / "labels.csv", tmp_path / "bad.csv"
    good.write_text("accession,finding\nC-1,0\n")
    bad.write_text("accession,finding\nC-9,1\n")
    runner = CliRunner()
    refused = runner.invoke(cli_app, ["feedback", "import", str(bad), "-c", str(config)])
    assert refused.exit_code == 1
    assert "line 2: unknown accession C-9" in unwrapped(refused.output)
    done = runner.invoke(cli_app, ["feedback", "import", str(good), "--json", "-c", str(config)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["disagree"] == 1


def test_a_browser_form_post_with_origin_null_is_same_origin_only_by_fetch_metadata(
    client: TestClient, ctx: AgentContext
) -> None:
    """With ``Referrer-Policy: no-referrer`` Chromium posts forms with ``Origin: null``."""
    job_id, _ = processed_job(ctx)
    web = TestClient(client.app, base_url="http://127.0.0.1:8080")
    login = web.post("/login", data={"token": "test-token-0123456789abcdef", "next": "/"})
    assert login.status_code == 200
    form = {"verdict": "agree"}
    cross = web.post(
        f"/jobs/{job_id}/feedback",
        data=form,
        headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert cross.status_code == 403
    bare = web.post(
        f"/jobs/{job_id}/feedback", data=form, headers={"Origin": "null"}, follow_redirects=False
    )
    assert bare.status_code == 403
    same = web.post(
        f"/jobs/{job_id}/feedback",
        data=form,
        headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert same.status_code == 303
    with ctx.sessions() as session:
        assert [f.user for f in store.feedback_of_job(session, job_id)] == ["shared-token"]
