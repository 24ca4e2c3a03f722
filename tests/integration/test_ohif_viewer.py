"""The radiologist's view: the agent's SEG, SR, SC and KOS opened in the OHIF viewer.

A phantom study goes from Orthanc to the agent (true liver masks, real classifier bundle) and its
results come back by C-STORE. OHIF (the pinned prebuilt ``@ohif/app`` from npm, see
``install-ohif.sh``) reads the study from Orthanc's DICOMweb under one loopback origin, in
headless Chromium, and the test checks what a radiologist would: the SEG overlay on the T2
series, the SR outline with its area and probability labels on the caudate-level slice (no crash,
no blank viewport), and the SC; and, for a study without an axial T2 series, the "not
evaluated" SR as a text report that says why (no crash). Screenshots go to the test's folder (and
to ``$LIVER_AGENT_VIEWER_SCREENSHOTS`` when set, to refresh ``docs/images``).

Skipped, with the reason, only where npm cannot reach its registry to fetch the viewer.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright
from pydicom.sr.codedict import codes

from pipeline.phantoms import PhantomStudy, generate_study
from tests.bundles import write_test_bundles
from tests.integration.ohif import (
    OHIF_VERSION,
    RegistryUnreachableError,
    ViewerServer,
    install_ohif,
    serving_ohif,
)
from tests.integration.orthanc import (
    Modality,
    OrthancProcess,
    orthanc_missing,
    running_orthanc,
    wait_for_results,
)
from tests.integration.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.integration.truth_agent import files_of, running_truth_agent, save_mask

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCREENSHOTS_ENV = "LIVER_AGENT_VIEWER_SCREENSHOTS"
VIEWPORT = '[data-cy="viewport-pane"]'
SLICE_OVERLAY = '[data-cy="viewport-overlay-bottom-right"]'
SERIES = {"seg": "9901", "sr": "9902", "sc": "9903"}  # data-series of the study browser items
NO_TOUR = "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']))"
STEP_S = 30.0  # deadline of each step in the viewer (polled)


class Console:
    """Every console message and uncaught page error of the page, in order."""

    def __init__(self, page: Page) -> None:
        self.lines: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.lines.append(f"pageerror: {error}"))

    def _message(self, message: ConsoleMessage) -> None:
        self.lines.append(f"{message.type}: {message.text}")

    def since(self, mark: int) -> list[str]:
        return self.lines[mark:]

    def crashes(self) -> list[str]:
        """Uncaught errors, React error boundaries and TypeErrors (what "Something went wrong"
        comes from)."""
        bad = ("pageerror:", "Error Boundary", "TypeError")
        return [line for line in self.lines if any(b in line for b in bad)]


def poll(predicate: Callable[[], Any], what: str, deadline_s: float = STEP_S) -> Any:
    """Call ``predicate`` until it returns something truthy; fail after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"after {deadline_s} s still waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def ohif_dist() -> Path:
    try:
        return install_ohif()
    except RegistryUnreachableError as err:
        pytest.skip(f"OHIF {OHIF_VERSION} cannot be installed: {err}")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    if missing := orthanc_missing():
        pytest.fail(missing)
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def _phantom(folder: Path, masks: Path) -> PhantomStudy:
    """A cirrhotic phantom at 128 x 128 (large enough to read in a screenshot)."""
    study = generate_study(
        folder,
        cirrhotic=True,
        seed=21,
        roles=("localizer", "ax_t2"),
        axial_t2_slices=16,
        matrix=128,
    )
    assert study.target_series_uid is not None
    assert study.liver_mask is not None
    save_mask(masks, study.target_series_uid, study.liver_mask)
    return study


def _instance(orthanc: OrthancProcess, series: dict[str, Any]) -> pydicom.Dataset:
    (instance_id,) = series["Instances"]
    return pydicom.dcmread(BytesIO(orthanc.instance_file(instance_id)))


def _slice_text(page: Page) -> str:
    overlay = page.locator(SLICE_OVERLAY)
    return overlay.inner_text() if overlay.count() else ""


def _coloured_pixels(png: bytes, test: Callable[[np.ndarray], np.ndarray]) -> int:
    rgb = np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(np.int32)
    return int(np.count_nonzero(test(rgb)))


def _orange(rgb: np.ndarray) -> np.ndarray:
    """The SEG's liver colour (221, 130, 101) blended over grey: red well above green and blue."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r - g > 40) & (r - b > 50)


def _yellow(rgb: np.ndarray) -> np.ndarray:
    """The SC's burned-in outline colour."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 180) & (g > 150) & (b < 90)


def _open_series(page: Page, series_number: str) -> None:
    item = page.locator(f'[data-series="{series_number}"]')
    expect(item).to_be_visible(timeout=STEP_S * 1000)
    item.dblclick()


def _go_to_instance(page: Page, instance_number: int, slices: int) -> None:
    """Scroll the viewport (mouse wheel) until it shows ``instance_number``; at either end of
    the stack (the wheel moves no more) scroll the other way."""
    box = page.locator(VIEWPORT).bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    target = f"I:{instance_number} ("
    step = 120
    for _ in range(3 * slices):
        text = _slice_text(page)
        if text.startswith(target):
            return
        assert re.search(r"\((\d+)/(\d+)\)", text), text
        page.mouse.wheel(0, step)
        try:
            poll(lambda before=text: _slice_text(page) != before, "the next slice", 3.0)
        except AssertionError:
            step = -step  # an end of the stack
    raise AssertionError(f"scrolled through {slices} slices without reaching image {target}")


def _save(page: Page, folder: Path, name: str) -> bytes:
    png = page.locator(VIEWPORT).screenshot()
    (folder / name).write_bytes(png)
    page.screenshot(path=str(folder / f"page-{name}"))
    return png


def _shot_showing(
    page: Page, folder: Path, name: str, colour: Callable[[np.ndarray], np.ndarray], minimum: int
) -> bytes | None:
    """A screenshot of the viewport once it holds ``minimum`` pixels of ``colour``, else None."""
    png = _save(page, folder, name)
    return png if _coloured_pixels(png, colour) > minimum else None


def test_ohif_shows_seg_sr_and_sc(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    ohif_dist: Path,
    orthanc: OrthancProcess,
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: install the Debian package chromium")
    masks = tmp_path / "masks"
    study = _phantom(tmp_path / "study", masks)
    bundles = write_test_bundles(tmp_path_factory.mktemp("bundles"))
    destination = {
        "name": "orthanc",
        "ae_title": orthanc.aet,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "send": {"seg": True, "sr": True, "sc": True, "kos": True},
    }
    with running_truth_agent(
        tmp_path / "agent", masks, bundles, destinations=[destination]
    ) as agent:
        orthanc.add_modality("liveragent", Modality(agent.ae_title, agent.port))
        study_id = orthanc.upload(files_of(study))
        orthanc.send_to_modality("liveragent", [study_id])
        kinds = {"SEG", "SR", "SC", "KO"}
        _, found, _ = wait_for_results(orthanc, study.study_instance_uid, kinds, 90)
        job = agent.finished_job(study.study_instance_uid)
    assert job["status"] == "done", job

    # what the SR says, read back from Orthanc: the viewer must show the same numbers
    sr = hd.sr.Comprehensive3DSR.from_dataset(_instance(orthanc, found["SR"][0]))
    assert isinstance(sr.content, hd.sr.MeasurementReport)
    (group,) = sr.content.get_planar_roi_measurement_groups()
    (area,) = group.get_measurements(name=codes.SCT.Area)
    (probability,) = group.get_measurements(
        name=hd.sr.CodedConcept("122157", "DCM", "Probability of cirrhosis")
    )
    assert probability.value == pytest.approx(100 * job["probability"])
    kos = _instance(orthanc, found["KO"][0])
    key_image = kos.ContentSequence[-1].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert key_image == job["slice_sop_instance_uid"]
    # Orthanc Explorer's view: the study lists the four result series, and its preview of the SC
    # (what Explorer shows for an image) has the burned-in outline
    assert set(orthanc.agent_results(study_id)) == kinds
    (sc_id,) = found["SC"][0]["Instances"]
    assert _coloured_pixels(orthanc.get_bytes(f"/instances/{sc_id}/preview"), _yellow) > 200
    t2 = next(s for s in study.series if s.series_instance_uid == study.target_series_uid)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in t2.files]
    caudate = next(h for h in headers if h.SOPInstanceUID == job["slice_sop_instance_uid"])
    caudate_instance = int(caudate.InstanceNumber)

    shots = tmp_path / "screenshots"
    shots.mkdir()
    started = time.monotonic()
    with (
        serving_ohif(ohif_dist, orthanc.url) as viewer,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            # the onboarding tour would cover the viewport: mark it as shown already
            page.add_init_script(NO_TOUR)
            console = Console(page)
            _check_viewer(
                page,
                console,
                viewer,
                study,
                shots,
                area.value,
                probability.value,
                (
                    caudate_instance,
                    len(headers),
                ),
            )
        finally:
            (tmp_path / "console.log").write_text("\n".join(console.lines))
            browser.close()
    print(f"viewer checks took {time.monotonic() - started:.1f} s; screenshots in {shots}")
    if target := os.environ.get(SCREENSHOTS_ENV):
        # the whole page (study browser with the agent's series beside the viewport), in a
        # 128-colour palette to keep the README's images small
        Path(target).mkdir(parents=True, exist_ok=True)
        for name in ("ohif-seg.png", "ohif-sr.png", "ohif-sc.png"):
            page_png = Image.open(shots / f"page-{name}").convert("RGB")
            page_png.quantize(colors=128).save(Path(target) / name, optimize=True)


def _check_viewer(
    page: Page,
    console: Console,
    viewer: ViewerServer,
    study: PhantomStudy,
    shots: Path,
    area_mm2: float,
    probability_percent: float,
    caudate: tuple[int, int],
) -> None:
    caudate_instance, slices = caudate
    page.goto(f"{viewer.url}/viewer?StudyInstanceUIDs={study.study_instance_uid}")
    expect(page.locator(f"{VIEWPORT} canvas").first).to_be_visible(timeout=STEP_S * 1000)
    poll(lambda: re.match(r"I:\d+ \(\d+/\d+\)", _slice_text(page)), "the first image")
    skip_tour = page.get_by_text("Skip all")
    if skip_tour.count():
        skip_tour.click()
    assert viewer.requests_forwarded > 0  # OHIF read the study through the one-origin proxy

    # SEG: OHIF asks before it overlays a segmentation on its source series
    mark = len(console.lines)
    _open_series(page, SERIES["seg"])
    page.get_by_role("button", name="Yes").click(timeout=STEP_S * 1000)
    poll(
        lambda: any("SEG parse complete" in line for line in console.since(mark)),
        "the SEG to be parsed",
    )
    _go_to_instance(page, caudate_instance, slices)
    seg_png = poll(
        lambda: _shot_showing(page, shots, "ohif-seg.png", _orange, 500),
        "the liver overlay on the caudate-level slice",
    )
    assert _coloured_pixels(seg_png, _orange) > 500
    assert not console.crashes(), console.crashes()

    # SR: no crash, no blank viewport; the outline with its labels on the caudate-level slice
    mark = len(console.lines)
    _open_series(page, SERIES["sr"])
    poll(lambda: _slice_text(page).startswith(f"I:{caudate_instance} ("), "the SR's slice")
    outline = page.locator(f"{VIEWPORT} svg.svg-layer polyline")
    try:
        expect(outline.first).to_be_attached(timeout=5000)
    except AssertionError:
        # OHIF 3.13 in headless Chromium adds the SR annotation after the viewport's first
        # render and draws it on the next one; a window resize (as a user would) renders again
        print("SR outline not drawn on the first render: resizing the window draws it")
        page.set_viewport_size({"width": 1280, "height": 861})
        expect(outline.first).to_be_attached(timeout=STEP_S * 1000)
    labels = page.locator(f"{VIEWPORT} svg.svg-layer text")
    expect(labels.first).to_be_attached(timeout=STEP_S * 1000)
    text = " | ".join(page.locator(f"{VIEWPORT} svg.svg-layer tspan").all_text_contents())
    assert f"Probability of cirrhosis: {probability_percent:.2f} %" in text, text
    assert f"Area: {area_mm2:.2f} mm2" in text, text
    assert "Volume:" in text, text
    points = outline.first.get_attribute("points") or ""
    assert len(points.split()) >= 8, points  # an outline, not a marker
    expect(page.locator(f"{VIEWPORT} canvas").first).to_be_visible()
    assert "Something went wrong" not in page.locator("body").inner_text()
    _save(page, shots, "ohif-sr.png")
    assert not console.crashes(), console.crashes()
    assert not [line for line in console.since(mark) if "no SCOORD" in line]

    # SC: the burned-in outline (yellow) and text show as an ordinary image
    _open_series(page, SERIES["sc"])
    expect(page.locator('[data-cy="viewport-overlay-top-left"]')).to_contain_text(
        "AI Liver SC", timeout=STEP_S * 1000
    )
    sc_png = poll(
        lambda: _shot_showing(page, shots, "ohif-sc.png", _yellow, 200),
        "the SC's burned-in outline",
    )
    assert _coloured_pixels(sc_png, _yellow) > 200
    assert not console.crashes(), console.crashes()


def test_ohif_shows_a_not_evaluated_sr_as_text(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    ohif_dist: Path,
    orthanc: OrthancProcess,
) -> None:
    """A study without an axial T2 series: the agent's "not evaluated" SR opens as a text
    report that says why (before: a TID 1500 title with no measurement group, and OHIF 3.13
    crashed with "Something went wrong")."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: install the Debian package chromium")
    study = generate_study(
        tmp_path / "study", cirrhotic=False, seed=22, roles=("localizer", "cor_t2"), matrix=128
    )
    bundles = write_test_bundles(tmp_path_factory.mktemp("bundles"))
    destination = {
        "name": "orthanc",
        "ae_title": orthanc.aet,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
    }
    masks = tmp_path / "masks"
    masks.mkdir()
    with running_truth_agent(
        tmp_path / "agent", masks, bundles, destinations=[destination]
    ) as agent:
        orthanc.add_modality("liveragent", Modality(agent.ae_title, agent.port))
        study_id = orthanc.upload(files_of(study))
        orthanc.send_to_modality("liveragent", [study_id])
        _, found, _ = wait_for_results(orthanc, study.study_instance_uid, {"SR"}, 90)
        job = agent.finished_job(study.study_instance_uid)
    assert job["status"] == "not_evaluated", job

    # what the SR says, read back from Orthanc: a text report, no measurement report
    dataset = _instance(orthanc, found["SR"][0])
    sr = hd.sr.ComprehensiveSR.from_dataset(dataset)
    assert sr.ConceptNameCodeSequence[0].CodeValue != "126000"  # not TID 1500's title
    texts = [str(i.TextValue) for i in _content_items(sr) if i.ValueType == "TEXT"]
    (statement,) = [t for t in texts if t.startswith("Not evaluated: ")]
    (reason_code,) = [t for t in texts if t.startswith("Reason code: ")]
    assert reason_code == "Reason code: no_axial_t2", texts

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with (
        serving_ohif(ohif_dist, orthanc.url) as viewer,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.add_init_script(NO_TOUR)
            console = Console(page)
            page.goto(f"{viewer.url}/viewer?StudyInstanceUIDs={study.study_instance_uid}")
            expect(page.locator(f"{VIEWPORT} canvas").first).to_be_visible(timeout=STEP_S * 1000)
            mark = len(console.lines)
            _open_series(page, SERIES["sr"])
            viewport = page.locator(VIEWPORT)
            expect(viewport).to_contain_text(statement, timeout=STEP_S * 1000)
            text = viewport.inner_text()
            assert "Finding:" in text, text
            assert reason_code in text, text
            assert "This is not a negative result" in text, text
            # OHIF shows a Finding preformatted (no wrapping): the statement's lines must fit
            statement_box = viewport.locator("pre").first
            assert statement_box.evaluate("e => e.scrollWidth <= e.clientWidth"), statement
            assert "Something went wrong" not in page.locator("body").inner_text()
            _save(page, shots, "ohif-not-evaluated.png")
            assert not console.crashes(), console.crashes()
            # OHIF read it as a document, not as a measurement report without measurements
            assert any("No measurements found" in line for line in console.since(mark))
        finally:
            (tmp_path / "console.log").write_text("\n".join(console.lines))
            browser.close()
    if target := os.environ.get(SCREENSHOTS_ENV):
        Path(target).mkdir(parents=True, exist_ok=True)
        page_png = Image.open(shots / "page-ohif-not-evaluated.png").convert("RGB")
        page_png.quantize(colors=128).save(Path(target) / "ohif-not-evaluated.png", optimize=True)


def _content_items(item: pydicom.Dataset) -> list[pydicom.Dataset]:
    """Every content item under ``item``, depth first."""
    out = []
    for child in item.get("ContentSequence", []):
        out.append(child)
        out += _content_items(child)
    return out
