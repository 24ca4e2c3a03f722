"""End-to-end latency with Orthanc: from the last instance the agent acknowledged to SEG + SR
stored in Orthanc, and where the time goes.

    .venv/bin/python -m bench.latency [--quiet 2 5] [--runs 5] [--seg-model S --cls-model C]

Orthanc (DICOMweb plugin, the agent as modality ``liveragent``) holds a 5-series phantom study
(localizer, coronal T2, axial T2 of 36 x 256 x 256, DWI, ADC); it is sent to ``liver-agent
serve`` by a synchronous C-STORE job (POST /modalities/liveragent/store) and the benchmark
polls Orthanc every 20 ms until the study holds the agent's SEG and SR. The start is the time
the agent recorded the study's last instance (``study.last_received_at``: just before that
instance's C-STORE response); the stages come from the job (``GET /api/jobs/{id}``: status
events with timestamps, stage timings). Each run is a new study (another seed). The agent runs
with its default settings except ``completion.quiet_seconds``; the networks are the DEMO bundle
when it is cached (``model.cache_dir``), else the bundles given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from agent.settings import ModelSettings
from pipeline.phantoms import PhantomStudy, generate_study
from tests.integration.orthanc import AGENT_MODALITY, Modality, OrthancProcess
from tests.integration.processes import AgentProcess, free_port

ROLES = ("localizer", "cor_t2", "ax_t2", "dwi", "adc")
STAGES = ("completion", "queue", "pipeline", "encoding", "other", "delivery")


def demo_bundles() -> tuple[Path, Path] | None:
    """The cached DEMO bundles of this code version, or None (the benchmark never trains)."""
    from pipeline.training.demo import CLASSIFICATION_DIR, SEGMENTATION_DIR, demo_key

    folder = ModelSettings().cache_dir / f"demo-{demo_key()}"
    seg, cls = folder / SEGMENTATION_DIR, folder / CLASSIFICATION_DIR
    return (
        (seg, cls)
        if (seg / "manifest.json").is_file() and (cls / "manifest.json").is_file()
        else None
    )


def utc(text: str) -> float:
    """Epoch seconds of an ISO timestamp from the agent's API (naive means UTC)."""
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def event_time(job: dict[str, Any], kind: str, to: str | None = None) -> float:
    for event in job["events"]:
        if event["kind"] == kind and (to is None or (event["data"] or {}).get("to") == to):
            return utc(event["at"])
    raise KeyError(f"job {job['id']} has no {kind} {to or ''} event")


def breakdown(job: dict[str, Any], arrived: float) -> dict[str, float]:
    """Seconds of each stage between the last instance and the results in Orthanc."""
    start = utc(job["study"]["last_received_at"])
    queued = event_time(job, "queued")
    running = event_time(job, "status", "running")
    delivering = event_time(job, "status", "delivering")
    stages = {s["stage"]: s["seconds"] for s in job["stages"]}
    pipeline, encoding = stages["total"], stages["encode"]
    return {
        "total": arrived - start,
        "completion": queued - start,
        "queue": running - queued,
        "pipeline": pipeline,
        "encoding": encoding,
        "other": (delivering - running) - pipeline - encoding,  # header scan, database
        "delivery": arrived - delivering,
    }


def one_run(
    orthanc: OrthancProcess, agent: AgentProcess, token: str, study: PhantomStudy
) -> dict[str, float]:
    files = [f for s in study.series for f in s.files]
    study_id = orthanc.upload(files)
    orthanc.send_to_modality(AGENT_MODALITY, [study_id])  # returns once all are acknowledged
    deadline = time.monotonic() + 300
    while True:
        kinds = orthanc.agent_results(study_id)
        if "SEG" in kinds and "SR" in kinds:
            arrived = time.time()
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no SEG + SR for {study.study_instance_uid}: {agent.log()[-3000:]}")
        time.sleep(0.02)
    headers = {"Authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{agent.http_port}/api/jobs"
    for _ in range(500):  # the job is done once the agent has recorded the delivery
        jobs = requests.get(
            base, params={"study_instance_uid": study.study_instance_uid}, headers=headers,
            timeout=10,
        ).json()["jobs"]  # fmt: skip
        if jobs and jobs[0]["status"] == "done":
            break
        time.sleep(0.02)
    job = requests.get(f"{base}/{jobs[0]['id']}", headers=headers, timeout=10).json()
    if job["status"] != "done" or not job["evaluated"]:
        raise RuntimeError(f"job {job['id']}: {job['status']} {job['reason_code']}")
    return breakdown(job, arrived)


def measure(
    root: Path,
    quiet: float,
    runs: int,
    bundles: tuple[Path, Path],
    passive: bool,
    poll: float | None,
) -> list[dict[str, float]]:
    orthanc = OrthancProcess(root / f"orthanc-{quiet:g}").start()
    port, http_port = free_port(), free_port()
    config: dict[str, Any] = {
        "dicom": {"ae_title": "LIVERAI", "host": "127.0.0.1", "port": port},
        "http": {"host": "127.0.0.1", "port": http_port},
        "completion": {"quiet_seconds": quiet},
        "model": {"segmentation": str(bundles[0]), "classification": str(bundles[1])},
        "destinations": [
            {"name": "orthanc", "ae_title": orthanc.aet, "host": "127.0.0.1",
             "port": orthanc.dicom_port},
        ],
    }  # fmt: skip
    if poll is not None:
        config["completion"]["poll_seconds"] = poll
        config["delivery"] = {"poll_seconds": poll}
    if passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    else:
        os.environ.pop("OMP_WAIT_POLICY", None)
    agent = AgentProcess(root / f"agent-{quiet:g}", config, port, http_port)
    try:
        agent.start()
        orthanc.add_modality(AGENT_MODALITY, Modality("LIVERAI", port))
        token_file = agent.workdir / "var" / "http-token"
        ready = f"http://127.0.0.1:{http_port}/readyz"
        deadline = time.monotonic() + 300
        while True:
            token = token_file.read_text().strip() if token_file.is_file() else ""
            if (
                token
                and requests.get(ready, headers={"Authorization": f"Bearer {token}"}, timeout=10).ok
            ):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the agent is not ready: {agent.log()[-3000:]}")
            time.sleep(0.2)
        results = []
        for n in range(runs + 1):  # the first run warms the worker up and is not counted
            study = generate_study(
                root / f"study-{quiet:g}-{n}", cirrhotic=bool(n % 2), seed=1000 + n, roles=ROLES
            )
            result = one_run(orthanc, agent, token, study)
            print(
                f"  quiet {quiet:g} s, run {n}{' (warm-up)' if n == 0 else ''}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in result.items()),
                flush=True,
            )
            if n:
                results.append(result)
        return results
    finally:
        agent.stop()
        orthanc.stop()


def report(quiet: float, results: list[dict[str, float]]) -> None:
    totals = [r["total"] for r in results]
    median, worst = statistics.median(totals), max(totals)
    goal = quiet + 2.0
    print(
        f"\nquiet {quiet:g} s: median {median:.2f} s, worst {worst:.2f} s over {len(results)} runs"
        f" (goal <= {goal:g} s: {'met' if worst <= goal else 'NOT met'})"
    )
    print(f"  {'stage':<11} {'median s':>9} {'share':>7}")
    for stage in STAGES:
        value = statistics.median(r[stage] for r in results)
        print(f"  {stage:<11} {value:>9.2f} {100 * value / median:>6.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quiet", type=float, nargs="+", default=[2.0, 5.0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seg-model", type=Path)
    parser.add_argument("--cls-model", type=Path)
    parser.add_argument(
        "--poll", type=float,
        help="completion.poll_seconds and delivery.poll_seconds (default: the agent's, 1 s)",
    )  # fmt: skip
    parser.add_argument(
        "--omp-spin", action="store_true",
        help="leave OMP_WAIT_POLICY unset (torch's threads spin while waiting)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.seg_model and args.cls_model:
        bundles: tuple[Path, Path] | None = (args.seg_model, args.cls_model)
    else:
        bundles = demo_bundles()
    if bundles is None:
        parser.error(
            "no DEMO bundle cached: build it with `liver-agent model build-demo`, or give "
            "--seg-model and --cls-model"
        )
    print(
        f"latency: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}; bundles {bundles[0].parent}; "
        f"OMP_WAIT_POLICY={'unset' if args.omp_spin else 'PASSIVE'}; "
        f"poll {args.poll or 'default'}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        for quiet in args.quiet:
            results = measure(Path(tmp), quiet, args.runs, bundles, not args.omp_spin, args.poll)
            report(quiet, results)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
