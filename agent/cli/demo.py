"""``liver-agent demo``: Orthanc and the agent on loopback, two phantom studies through the PACS
loop (Orthanc -> agent -> Orthanc), then both left running until Ctrl-C."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from agent.cli._common import console, fail
from agent.cli._demo_setup import (
    AGENT_AET,
    MODALITY,
    ORTHANC_AET,
    STABLE_AGE,
    Child,
    Ports,
    T,
    agent_configuration,
    env,
    find_orthanc,
    http,
    orthanc_configuration,
    wait_for,
)

ROUTING_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "orthanc" / "route-liver.lua"
UNDER_WAY = ("received", "queued", "running", "delivering")
# (cirrhotic, seed, label). The DEMO classifier errs on about one phantom in twelve
# (docs/benchmarks.md: the normal phantom of seed 2 is called cirrhotic): these two seeds are
# ones it gets right, so that the demo shows both answers.
STUDIES = ((True, 1, "cirrhotic"), (False, 3, "normal"))
MARKER = ".liver-agent-demo"
AGENT_CLI = str(Path(sys.executable).parent / "liver-agent")
INSTALL_HINT = (
    "Orthanc and its DICOMweb plugin are needed: run `sudo make system-packages` "
    "(or `sudo apt-get install orthanc orthanc-dicomweb`), then `make demo` again"
)


def build_demo_bundles(config: Path) -> None:
    """Build the DEMO networks now (progress bars) unless they are cached."""
    from agent.settings import load_settings
    from pipeline.training.demo import demo_key

    cache = load_settings(config).model.cache_dir / f"demo-{demo_key()}"
    if cache.is_dir():
        console.print(f"DEMO networks: cached in {cache}", highlight=False)
        return
    console.print(
        "[bold]Building the DEMO networks[/] (trained on synthetic phantoms; first use only, "
        f"about 5 minutes on 2 CPU cores; kept in {cache.parent})",
        highlight=False,
    )
    command = [AGENT_CLI, "model", "build-demo", "--config", str(config)]
    if subprocess.run(command, env=env(), check=False).returncode:
        fail("building the DEMO networks failed (see above)")


@dataclass
class Demo:
    """The running demo: its folder, ports, configuration files and processes."""

    folder: Path
    ports: Ports
    lua: Path | None
    children: list[Child]
    token: str = ""

    @property
    def orthanc_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.orthanc_http}"

    @property
    def agent_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.agent_http}"

    @property
    def agent_yaml(self) -> Path:
        return self.folder / "agent" / "liver-agent.yaml"

    def agent_api(self, path: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        return http("GET", f"{self.agent_url}{path}", params=params, headers=headers)

    def wait(self, check: Callable[[], T | None], deadline_s: float, what: str) -> T:
        return wait_for(check, deadline_s, what, self.children)


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)


def start_processes(demo: Demo, orthanc_bin: str) -> None:
    """Start Orthanc and the agent; return when Orthanc answers and the agent is ready."""
    orthanc_dir, agent_dir = demo.folder / "orthanc", demo.folder / "agent"
    orthanc_json = orthanc_dir / "orthanc.json"
    demo.children.append(
        Child("Orthanc", [orthanc_bin, str(orthanc_json)], orthanc_dir, orthanc_dir / "orthanc.log")
    )
    command = [AGENT_CLI, "serve", "--config", str(demo.agent_yaml)]
    demo.children.append(Child("the agent", command, agent_dir, agent_dir / "agent.log"))
    demo.wait(lambda: http("GET", f"{demo.orthanc_url}/system"), 60, "Orthanc")
    _say(
        f"Orthanc (the PACS) is up: AE {ORTHANC_AET}, DICOM port {demo.ports.orthanc_dicom}, "
        f"web {demo.orthanc_url}/app/explorer.html"
    )
    token_file = agent_dir / "var" / "http-token"
    demo.token = demo.wait(
        lambda: token_file.read_text().strip() or None if token_file.is_file() else None,
        120,
        "the agent's HTTP service",
    )
    _say("Waiting for the agent to load its networks (GET /readyz) ...")
    demo.wait(lambda: demo.agent_api("/readyz"), 600, "the agent to be ready")
    _say(f"The agent is up: AE {AGENT_AET}, DICOM port {demo.ports.agent_dicom}, {demo.agent_url}/")


def store_studies(demo: Demo, matrix: int, slices: int) -> list[tuple[str, str, str]]:
    """Write the phantom studies and store them in Orthanc (REST); without the routing script,
    also order Orthanc to send them. Returns (label, Study Instance UID, Orthanc ID) each."""
    from pipeline.phantoms import generate_study

    stored = []
    for cirrhotic, seed, label in STUDIES:
        study = generate_study(
            demo.folder / "studies" / label,
            cirrhotic=cirrhotic,
            seed=seed,
            axial_t2_slices=slices,
            matrix=matrix,
        )
        files = [f for s in study.series for f in s.files]
        parents = {
            http("POST", f"{demo.orthanc_url}/instances", data=f.read_bytes())["ParentStudy"]
            for f in files
        }
        (study_id,) = parents
        stored.append((label, study.study_instance_uid, study_id))
        _say(
            f"Stored the {label} phantom study in Orthanc: {len(study.series)} series, "
            f"{len(files)} images"
        )
        if demo.lua is None:
            body = {"Resources": [study_id], "Asynchronous": True}
            http("POST", f"{demo.orthanc_url}/modalities/{MODALITY}/store", json=body)
    how = (
        f"once it is stable ({STABLE_AGE} s without new images; deploy/orthanc/route-liver.lua)"
        if demo.lua is not None
        else "(ordered through Orthanc's REST API)"
    )
    _say(f"Orthanc sends each study to the agent {how}; the agent sends SEG, SR and SC back ...")
    return stored


def wait_for_results(demo: Demo, stored: list[tuple[str, str, str]]) -> None:
    """Wait until each study's job has finished (its results delivered to Orthanc)."""

    def finished(study_uid: str) -> dict[str, Any] | None:
        jobs = demo.agent_api("/api/jobs", study_instance_uid=study_uid)["jobs"]
        return jobs[0] if jobs and jobs[0]["status"] not in UNDER_WAY else None

    for label, study_uid, study_id in stored:
        job = demo.wait(functools.partial(finished, study_uid), 900, f"the {label} study's result")
        result = job["label"] or f"not evaluated ({job['reason_code']})"
        p = f", p={job['probability']:.2f}" if job["probability"] is not None else ""
        series = http("GET", f"{demo.orthanc_url}/studies/{study_id}/series")
        back = sorted(
            s["MainDicomTags"].get("SeriesDescription", "")
            for s in series
            if s["MainDicomTags"].get("Manufacturer") == "liver-agent"
        )
        _say(f"  {label} study: job {job['id']} {job['status']}: {result}{p}")
        _say(f"    back in Orthanc: {'; '.join(back) or 'nothing'}")


def show_where_to_look(demo: Demo, stored: list[tuple[str, str, str]]) -> None:
    console.print()
    subprocess.run([AGENT_CLI, "jobs", "list", "--config", str(demo.agent_yaml)], check=False)
    _say("\n[bold]Where to look[/]")
    for label, _, study_id in stored:
        explorer = f"{demo.orthanc_url}/app/explorer.html#study?uuid={study_id}"
        _say(f"  {label} study in Orthanc: {explorer}")
    _say(f"  the agent's web page: {demo.agent_url}/  (log in with the token {demo.token})")
    _say(f"  the token again: liver-agent http token --show --config {demo.agent_yaml}")
    _say(f"  jobs: liver-agent jobs list --config {demo.agent_yaml}")
    _say(
        f"  logs: {demo.folder / 'orthanc' / 'orthanc.log'}, {demo.folder / 'agent' / 'agent.log'}"
    )


def run_demo(
    folder: Path, bundles: tuple[Path, Path] | None, matrix: int, slices: int, stay: bool
) -> None:
    """Everything ``liver-agent demo`` does, in order."""
    orthanc_bin = find_orthanc()
    if orthanc_bin is None:
        fail(INSTALL_HINT)
    marker = folder / MARKER
    if folder.exists() and any(folder.iterdir()) and not marker.is_file():
        fail(f"{folder} is not empty and not a demo folder; choose another --dir", 2)
    if folder.exists():
        shutil.rmtree(folder)  # a fresh PACS and agent each time (the DEMO networks are kept)
    folder.mkdir(parents=True)
    marker.write_text("made by `liver-agent demo`; emptied at each run\n")
    demo = Demo(folder, Ports.pick(), ROUTING_SCRIPT if ROUTING_SCRIPT.is_file() else None, [])
    (folder / "orthanc").mkdir()
    (folder / "agent").mkdir()
    config = orthanc_configuration(folder / "orthanc", demo.ports, demo.lua)
    (folder / "orthanc" / "orthanc.json").write_text(json.dumps(config, indent=2))
    demo.agent_yaml.write_text(
        yaml.safe_dump(agent_configuration(folder / "agent", demo.ports, bundles))
    )
    if bundles is None:
        build_demo_bundles(demo.agent_yaml)
    try:
        start_processes(demo, orthanc_bin)
        stored = store_studies(demo, matrix, slices)
        wait_for_results(demo, stored)
        show_where_to_look(demo, stored)
        if stay:
            _say("\nOrthanc and the agent keep running: press Ctrl-C to stop both.")
            with _interrupted() as stopped:
                while not stopped() and all(c.alive() for c in demo.children):
                    time.sleep(0.5)
    finally:
        for child in reversed(demo.children):
            child.stop()
        if demo.children:
            _say("Stopped the agent and Orthanc.")


@contextlib.contextmanager
def _interrupted() -> Iterator[Callable[[], bool]]:
    """Within the block, SIGINT/SIGTERM only set a flag (the caller then stops cleanly)."""
    flag: list[bool] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda *_: flag.append(True))
    try:
        yield lambda: bool(flag)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        folder: Annotated[
            Path, typer.Option("--dir", help="working folder (emptied first)")
        ] = Path("var/demo"),
        seg_model: Annotated[
            Path | None, typer.Option(help="segmentation bundle instead of the DEMO one")
        ] = None,
        cls_model: Annotated[
            Path | None, typer.Option(help="classification bundle instead of the DEMO one")
        ] = None,
        matrix: Annotated[int, typer.Option(min=32, max=512, help="phantom matrix")] = 256,
        slices: Annotated[int, typer.Option(min=12, max=120, help="axial T2 slices")] = 36,
        exit_when_done: Annotated[
            bool, typer.Option(help="stop both once the results are back (scripts, CI)")
        ] = False,
    ) -> None:
        """Orthanc and the agent on loopback with two phantom studies (make demo).

        Sends a cirrhotic and a normal phantom study into Orthanc, lets Orthanc route them to
        the agent, shows the results and keeps both running until Ctrl-C.
        """
        if (seg_model is None) != (cls_model is None):
            fail("give both --seg-model and --cls-model, or neither (DEMO networks)", 2)
        bundles = (seg_model, cls_model) if seg_model and cls_model else None
        run_demo(folder.resolve(), bundles, matrix, slices, stay=not exit_when_done)
