"""End-to-end latency with Orthanc: from the last instance the agent acknowledged to SEG + SR
stored in Orthanc, and where the time goes.

    .venv/bin/python -m bench.latency [--quiet 2 5] [--runs 5] [--seg-model S --cls-model C]
    .venv/bin/python -m bench.latency --t2-first [--series-quiet 1 0.5] [--runs 5]

``--front-end agent native``: the agent's own SCP, then DCMTK storescp in front of it
(``dicom.native``); for the native front end an instance's time is when the agent recorded it,
after storescp had answered it (the intake lag: milliseconds while the agent keeps up).

``--t2-first``: a 13-series study (every role of the phantom generator, the axial T2 sent third
and ten series after it... in SeriesNumber order) sent series by series over one association;
recorded are (a) from the T2 series' last instance to SEG + SR in Orthanc and (b) from the
study's last instance to SEG + SR in Orthanc (negative: the results were in Orthanc before the
study had finished arriving), and whether the T2-first job stood (one job version).

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
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from agent.settings import ModelSettings
from pipeline.phantoms import PhantomStudy, generate_study
from pipeline.phantoms.types import ALL_ROLES
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
    series_quiet: float | None = None,
    t2_first: bool = True,
    runtime: str = "auto",
    front_end: str = "agent",
) -> list[dict[str, float]]:
    label = f"{quiet:g}" if series_quiet is None else f"t2first-{series_quiet:g}-{t2_first}"
    label += f"-{runtime}-{front_end}"
    orthanc = OrthancProcess(root / f"orthanc-{label}").start()
    port, http_port = free_port(), free_port()
    completion: dict[str, Any] = {
        "quiet_seconds": quiet,
        "t2_first": series_quiet is not None and t2_first,
    }
    if series_quiet is not None:
        completion["series_quiet_seconds"] = series_quiet
    config: dict[str, Any] = {
        "dicom": {"ae_title": "LIVERAI", "host": "127.0.0.1", "port": port},
        "http": {"host": "127.0.0.1", "port": http_port},
        "completion": completion,
        "model": {"segmentation": str(bundles[0]), "classification": str(bundles[1]),
                  "runtime": runtime, "cache_dir": str(root / "model-cache")},
        "destinations": [
            {"name": "orthanc", "ae_title": orthanc.aet, "host": "127.0.0.1",
             "port": orthanc.dicom_port},
        ],
    }  # fmt: skip
    if front_end == "native":  # DCMTK storescp in front (dicom.native)
        native = {"enabled": True, "source_ae": orthanc.aet}  # the sender, for route: source
        config["dicom"].update(require_called_ae=False, native=native)
    if poll is not None:
        config["completion"]["poll_seconds"] = poll
        config["delivery"] = {"poll_seconds": poll}
    if passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    else:
        os.environ.pop("OMP_WAIT_POLICY", None)
    agent = AgentProcess(root / f"agent-{label}", config, port, http_port)
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
            roles = ROLES if series_quiet is None else ALL_ROLES
            study = generate_study(
                root / f"study-{label}-{n}", cirrhotic=bool(n % 2), seed=1000 + n, roles=roles
            )
            if series_quiet is None:
                result = one_run(orthanc, agent, token, study)
            else:
                result = one_t2_first_run(orthanc, agent, token, study)
            print(
                f"  {label}, run {n}{' (warm-up)' if n == 0 else ''}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in result.items()),
                flush=True,
            )
            if n:
                results.append(result)
        return results
    finally:
        agent.stop()
        orthanc.stop()


def one_t2_first_run(
    orthanc: OrthancProcess, agent: AgentProcess, token: str, study: PhantomStudy
) -> dict[str, float]:
    """Send the study series by series (SeriesNumber order, one association) while polling
    Orthanc for the agent's SEG + SR; times come from the agent's database (when it recorded
    the T2 series' and the study's last instance) and the job."""
    files = [f for s in study.series for f in s.files]
    study_id = orthanc.upload(files)
    by_uid = {
        str(s["MainDicomTags"]["SeriesInstanceUID"]): str(s["ID"]) for s in orthanc.series(study_id)
    }
    ordered = [by_uid[s.series_instance_uid] for s in study.series]
    t2_uid = next(s.series_instance_uid for s in study.series if s.role == "ax_t2")
    sent: dict[str, float] = {}

    def send() -> None:
        orthanc.send_to_modality(AGENT_MODALITY, ordered)  # one C-STORE job, in this order
        sent["end"] = time.time()

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 300
    while True:
        kinds = orthanc.agent_results(study_id)
        if "SEG" in kinds and "SR" in kinds:
            arrived = time.time()
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no SEG + SR for {study.study_instance_uid}: {agent.log()[-3000:]}")
        time.sleep(0.02)
    sender.join()
    headers = {"Authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{agent.http_port}/api/jobs"
    for _ in range(1000):  # wait for the study to complete: the T2-first job stands or not
        jobs = requests.get(
            base, params={"study_instance_uid": study.study_instance_uid}, headers=headers,
            timeout=10,
        ).json()["jobs"]  # fmt: skip
        job = requests.get(f"{base}/{jobs[-1]['id']}", headers=headers, timeout=10).json()
        if job["study"]["status"] == "complete" and job["status"] in ("done", "failed"):
            break
        time.sleep(0.05)
    first = requests.get(f"{base}/{min(j['id'] for j in jobs)}", headers=headers, timeout=10)
    first_job = first.json()
    with sqlite3.connect(f"file:{agent.db_path}?mode=ro", uri=True) as db:
        t2_last, study_last = db.execute(
            "SELECT max(CASE WHEN s.series_instance_uid = ? THEN i.received_at END),"
            " max(i.received_at) FROM instances i JOIN series s ON s.id = i.series_id"
            " JOIN studies st ON st.id = s.study_id WHERE st.study_instance_uid = ?",
            (t2_uid, study.study_instance_uid),
        ).fetchone()
    t2_end, study_end = utc(t2_last), utc(study_last)
    if first_job["status"] != "done" or not first_job["evaluated"]:
        raise RuntimeError(f"job {first_job['id']}: {first_job['status']}")
    queued = event_time(first_job, "queued")
    running = event_time(first_job, "status", "running")
    delivering = event_time(first_job, "status", "delivering")
    stages = {s["stage"]: s["seconds"] for s in first_job["stages"]}
    return {
        "t2_to_results": arrived - t2_end,
        "study_end_to_results": arrived - study_end,
        "send_end_to_results": arrived - sent["end"],
        "versions": float(len(jobs)),
        "t2_first": float("t2_first" in (first_job.get("details") or {})),
        "completion": queued - t2_end,
        "queue": running - queued,
        "pipeline": stages["total"],
        "encoding": stages["encode"],
        "other": (delivering - running) - stages["total"] - stages["encode"],
        "delivery": arrived - delivering,
    }


def report_t2_first(
    series_quiet: float, results: list[dict[str, float]], t2_first: bool = True
) -> None:
    a = [r["t2_to_results"] for r in results]
    b = [r["study_end_to_results"] for r in results]
    a_med, b_med = statistics.median(a), statistics.median(b)
    title = (
        f"\nT2-first, series quiet {series_quiet:g} s, {len(results)} runs:"
        if t2_first
        else f"\nBaseline (T2-first off, the same study), {len(results)} runs:"
    )
    print(
        title + f"\n  (a) T2 series' last instance -> SEG + SR in Orthanc: median {a_med:.2f}"
        f" s, worst {max(a):.2f} s (goal <= 2 s: {'met' if max(a) <= 2.0 else 'NOT met'})"
        f"\n  (b) study's last instance -> SEG + SR in Orthanc: median {b_med:.2f}"
        f" s, worst {max(b):.2f} s (negative: before the study had arrived;"
        f" {sum(x < 0 for x in b)} of {len(b)} runs)"
        f"\n  job versions per study: {sorted({int(r['versions']) for r in results})},"
        f" T2-first jobs: {int(sum(r['t2_first'] for r in results))} of {len(results)}"
    )
    print(f"  {'stage':<11} {'median s':>9}")
    for stage in STAGES:
        print(f"  {stage:<11} {statistics.median(r[stage] for r in results):>9.2f}")


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
    parser.add_argument(
        "--t2-first", action="store_true",
        help="the 13-series study with the axial T2 third (T2-first processing on)",
    )  # fmt: skip
    parser.add_argument("--series-quiet", type=float, nargs="+", default=[1.0])
    parser.add_argument(
        "--runtime", nargs="+", default=["auto"], choices=["auto", "torch", "openvino"],
        help="model.runtime; several: each in turn, same run",
    )  # fmt: skip
    parser.add_argument(
        "--front-end", nargs="+", default=["agent"], choices=["agent", "native"],
        help="agent: the agent's own SCP; native: DCMTK storescp in front (dicom.native); "
        "several: each in turn, same run",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", action="store_true",
        help="with --t2-first: also the same study with T2-first off (the study-level rule)",
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
        for runtime, front_end in [(r, f) for r in args.runtime for f in args.front_end]:
            if len(args.runtime) > 1 or len(args.front_end) > 1:
                print(f"\n=== model.runtime: {runtime}, front end: {front_end} ===", flush=True)
            if args.t2_first:
                for series_quiet in args.series_quiet:
                    results = measure(
                        Path(tmp), 5.0, args.runs, bundles, not args.omp_spin, args.poll,
                        series_quiet, runtime=runtime, front_end=front_end,
                    )  # fmt: skip
                    report_t2_first(series_quiet, results)
                if args.baseline:
                    results = measure(
                        Path(tmp), 5.0, args.runs, bundles, not args.omp_spin, args.poll, 1.0,
                        False, runtime=runtime,
                    )  # fmt: skip
                    report_t2_first(1.0, results, t2_first=False)
            else:
                for quiet in args.quiet:
                    results = measure(
                        Path(tmp), quiet, args.runs, bundles, not args.omp_spin, args.poll,
                        runtime=runtime, front_end=front_end,
                    )  # fmt: skip
                    report(quiet, results)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
