"""The admin page in headless Chromium against a running ``liver-agent serve``: log in with
the generated token, find the job, open it, see the preview.

The study arrives by STOW-RS and its job is queued by the real completion rule; the agent runs
no workers, so the test then writes a worker's result into the agent's database (result fields,
selection details, a SEG output file of the phantom's liver masks) and the page shows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from playwright.sync_api import Page, expect, sync_playwright
from pydicom.uid import generate_uid

from storage.db import make_engine, make_sessionmaker
from tests.agent.http_data import mark_processed, mr_series
from tests.integration.processes import running_agent, wait_until

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _jobs(port: int, token: str, study_uid: str) -> list[dict[str, Any]]:
    response = requests.get(
        f"http://127.0.0.1:{port}/api/jobs",
        params={"study_instance_uid": study_uid},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    response.raise_for_status()
    jobs: list[dict[str, Any]] = response.json()["jobs"]
    return jobs


def _login(page: Page, base: str, token: str) -> None:
    page.goto(base + "/")
    expect(page).to_have_url(f"{base}/login?next=%2F")
    page.get_by_label("Token").fill("wrong-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not the agent's token")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(base + "/")


def test_admin_page_shows_the_job_and_its_preview(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: install the Debian package chromium")
    study_uid = generate_uid()
    datasets, masks = mr_series(study_uid, 8, rows=96, accession="BROWSER-1")
    localizer, _ = mr_series(
        study_uid, 2, rows=16, accession="BROWSER-1", description="localizer", series_number=1
    )
    with running_agent(tmp_path, worker={"threads": 0}) as agent:
        token_file = agent.workdir / "var" / "http-token"
        token = token_file.read_text().strip()
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        port = agent.http_port
        base = f"http://127.0.0.1:{port}"
        client = DICOMwebClient(
            url=f"{base}/dicomweb", headers={"Authorization": f"Bearer {token}"}
        )
        client.store_instances(datasets + localizer)
        jobs = wait_until(lambda: _jobs(port, token, study_uid), 30, "the job of the study")
        job_id = int(jobs[0]["id"])

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                _login(page, base, token)
                row = page.locator("table.jobs tbody tr", has_text="BROWSER-1")
                expect(row).to_have_count(1)
                expect(row.locator(".status")).to_have_text("queued")

                engine = make_engine(f"sqlite:///{agent.db_path}")
                try:
                    mark_processed(
                        make_sessionmaker(engine),
                        agent.workdir / "var" / "results",
                        job_id,
                        datasets,
                        masks,
                        other_series_uid=str(localizer[0].SeriesInstanceUID),
                    )
                finally:
                    engine.dispose()
                # the table refreshes itself (every 5 s) without a page load
                expect(row.locator(".status")).to_have_text("done", timeout=15000)
                expect(row).to_contain_text("DEMO")
                page.screenshot(path=str(tmp_path / "jobs.png"), full_page=True)

                row.get_by_role("link", name=str(job_id)).click()
                expect(page).to_have_url(f"{base}/jobs/{job_id}")
                expect(page.get_by_role("heading", name=f"Job {job_id}")).to_be_visible()
                expect(page.locator(".demo-banner")).to_contain_text("DEMO MODEL")
                expect(page.locator(".ruo-banner")).to_contain_text("RESEARCH USE ONLY")
                expect(page.locator("tr.chosen")).to_contain_text("t2_haste_tra")
                expect(page.locator("table.candidates")).to_contain_text("localizer")
                preview = page.locator("img#preview")
                expect(preview).to_be_visible()
                page.wait_for_function(
                    "() => { const i = document.querySelector('img#preview');"
                    " return i && i.complete && i.naturalWidth > 0; }",
                    timeout=15000,
                )
                assert preview.evaluate("img => img.naturalWidth") == 576  # 96 px x 6
                page.screenshot(path=str(tmp_path / "job.png"), full_page=True)
            finally:
                browser.close()
        assert (tmp_path / "job.png").stat().st_size > 10_000
    assert token not in agent.log()
