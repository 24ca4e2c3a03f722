"""Trust in headless Chromium against a running ``liver-agent serve``: a viewer's token sees
the job page without the feedback form; a reader logs in with a named token, disagrees with the
finding on the job page, and the verdict lands with the reader's name (checked through the
API); the monitoring page shows agreement with its intervals. Screenshots of the job page and
the monitoring page go to the test's folder, and to ``$LIVER_AGENT_PAGE_SCREENSHOTS`` when set
(``docs/images`` refreshes the README's pictures)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright
from pydicom.uid import generate_uid

from agent.access import Role, create_token
from storage.db import make_engine, make_sessionmaker
from tests.agent.http_data import mark_processed, mr_series
from tests.agent.monitoring_data import make_jobs
from tests.integration.processes import running_agent, wait_until
from tests.integration.test_browser import CHROMIUM, CHROMIUM_ARGS, _jobs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCREENSHOTS_ENV = "LIVER_AGENT_PAGE_SCREENSHOTS"


def _login(page: Page, base: str, token: str, target: str) -> None:
    page.goto(base + target)
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(base + target)


def test_reader_gives_feedback_on_the_job_page_and_monitoring_shows_it(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: install the Debian package chromium")
    study_uid = generate_uid()
    datasets, masks = mr_series(study_uid, 8, rows=96, accession="TRUST-1")
    with running_agent(tmp_path, worker={"threads": 0}) as agent:
        shared = (agent.workdir / "var" / "http-token").read_text().strip()
        base = f"http://127.0.0.1:{agent.http_port}"
        DICOMwebClient(
            url=f"{base}/dicomweb", headers={"Authorization": f"Bearer {shared}"}
        ).store_instances(datasets)
        jobs = wait_until(lambda: _jobs(agent.http_port, shared, study_uid), 30, "the job")
        job_id = int(jobs[0]["id"])
        engine = make_engine(f"sqlite:///{agent.db_path}")
        try:
            sessions = make_sessionmaker(engine)
            mark_processed(sessions, agent.workdir / "var" / "results", job_id, datasets, masks)
            with sessions.begin() as session:
                _, reader = create_token(session, "dr-lee", Role.READER, created_by="test")
                _, viewer = create_token(session, "student", Role.VIEWER, created_by="test")
            make_jobs(sessions)  # 21 jobs of another model version with scripted feedback
        finally:
            engine.dispose()

        refused = requests.post(
            f"{base}/api/jobs/{job_id}/feedback",
            json={"agree": True},
            headers={"Authorization": f"Bearer {viewer}"},
            timeout=10,
        )
        assert refused.status_code == 403

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                _login(page, base, viewer, f"/jobs/{job_id}")
                section = page.locator("section#feedback")
                expect(section).to_contain_text("needs the role reader")
                expect(section.locator("form")).to_have_count(0)
                page.get_by_role("button", name="Log out").click()

                _login(page, base, reader, f"/jobs/{job_id}")
                form = page.locator("form.feedback-form")
                expect(form).to_contain_text("cirrhosis")
                form.get_by_label("wrong (disagree)").check()
                form.get_by_label("wrong outline").check()
                form.get_by_label("Comment (optional)").fill("outline includes the spleen")
                form.get_by_role("button", name="Record feedback as dr-lee").click()
                expect(page.locator(".flash")).to_contain_text("recorded as dr-lee")
                row = page.locator("table.feedback tbody tr").first
                expect(row.locator(".feedback-user")).to_have_text("dr-lee")
                expect(row.locator(".verdict")).to_have_text("disagree")
                expect(row).to_contain_text("wrong outline")
                page.wait_for_function(
                    "() => { const i = document.querySelector('img#preview');"
                    " return i && i.complete && i.naturalWidth > 0; }",
                    timeout=15000,
                )
                page.screenshot(path=str(tmp_path / "job-feedback.png"), full_page=True)

                page.get_by_role("link", name="Monitoring").click()
                expect(page).to_have_url(base + "/monitoring")
                model = page.locator('section.model-monitoring[data-model="liver-cls"]')
                expect(model.locator(".accuracy")).to_contain_text("75.0 %")
                expect(model.locator(".accuracy")).to_contain_text("53.1–88.8 %")
                expect(model.locator(".drift-flagged")).to_contain_text("3")
                expect(model.locator("svg.chart")).to_have_count(3)
                expect(page.locator("#alerts")).to_contain_text("accuracy low")
                page.screenshot(path=str(tmp_path / "monitoring.png"), full_page=True)
            finally:
                browser.close()

        listed = requests.get(
            f"{base}/api/jobs/{job_id}/feedback",
            headers={"Authorization": f"Bearer {shared}"},
            timeout=10,
        ).json()["feedback"]
        assert [(f["user"], f["source"], f["agree"], f["wrong_outline"]) for f in listed] == [
            ("dr-lee", "web", False, True)
        ]
        assert listed[0]["comment"] == "outline includes the spleen"
    for name in ("job-feedback.png", "monitoring.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    for secret in (shared, reader, viewer):
        assert secret not in agent.log()
    if target := os.environ.get(SCREENSHOTS_ENV):
        Path(target).mkdir(parents=True, exist_ok=True)
        for name in ("job-feedback.png", "monitoring.png"):
            shot = Image.open(tmp_path / name).convert("RGB")
            shot.quantize(colors=128).save(Path(target) / name, optimize=True)
