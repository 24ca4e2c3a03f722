"""Load: many small studies over concurrent associations, each processed exactly once.

    .venv/bin/python -m bench.load [--studies 100] [--associations 8] [--workers 2]

``--studies`` small phantom studies (one axial T2 series of 24 slices of 64 x 64) are sent to
``liver-agent serve`` by ``--associations`` DCMTK ``storescu`` processes at a time (one
association per study, so as many associations are always open at once), and the agent sends
its SEG and SR to a DCMTK ``storescp`` (``--unique-filenames``: a result sent twice would show
as two files). The benchmark then checks that every study has exactly one job and that it is
``done``, and that the destination holds each result SOP Instance exactly once and nothing
else; it prints the wall time (first C-STORE to the last job done), throughput, and the agent
process's peak memory (``VmHWM`` of ``/proc/<pid>/status``: peak resident set size).

The liver mask of each phantom comes from its generator (``tests.integration.truth_agent``,
as in the integration tests): the test bundles are untrained, so without it every job would be
"not evaluated"; the classifier, the SEG/SR encoding, the database and the deliveries are the
real ones.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydicom import dcmread

from pipeline.phantoms import PhantomStudy
from tests.bundles import write_test_bundles
from tests.integration.processes import (
    STORESCP,
    STORESCU,
    agent_config,
    dcmtk_env,
    free_port,
    wait_for_port,
)
from tests.integration.truth_agent import TruthAgentProcess, files_of, truth_phantom


def _kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field in KiB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db, timeout=30) as conn:
        return list(conn.execute(sql).fetchall())


def _send(port: int, study: PhantomStudy, n: int) -> None:
    done = subprocess.run(
        [
            STORESCU,
            "-aet",
            f"PACS{n % 8}",
            "-aec",
            "LIVERAI",
            "127.0.0.1",
            str(port),
            *map(str, files_of(study)),
        ],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed for study {n}: {done.stderr[-500:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--associations", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="agent worker threads")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="liver-agent-load-"))
    try:
        masks = root / "masks"
        print(f"writing {args.studies} phantom studies and test bundles in {root} ...")
        started = time.perf_counter()
        studies = [
            truth_phantom(
                root / "studies" / f"{n:03d}",
                masks,
                seed=n,
                roles=("ax_t2",),
                cirrhotic=bool(n % 2),
            )
            for n in range(args.studies)
        ]
        bundles = write_test_bundles(root / "bundles")
        print(
            f"  done in {time.perf_counter() - started:.0f} s "
            f"({sum(len(files_of(s)) for s in studies)} instances)"
        )

        received = root / "received"
        received.mkdir()
        dest_port = free_port()
        storescp = subprocess.Popen(
            [STORESCP, "-aet", "DEST", "--unique-filenames", "-od", str(received), str(dest_port)],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(dest_port, 20, storescp)
        port, http_port = free_port(), free_port()
        config = agent_config(
            port,
            http_port,
            model={
                "segmentation": str(bundles[0]),
                "classification": str(bundles[1]),
                "device": "cpu",
            },
            destinations=[
                {
                    "name": "pacs",
                    "ae_title": "DEST",
                    "host": "127.0.0.1",
                    "port": dest_port,
                    "route": "always",
                    "send": {"seg": True, "sr": True},
                }
            ],
            worker={"threads": args.workers},
            dicom={"max_associations": max(10, args.associations + 2)},
        )
        agent = TruthAgentProcess(root / "agent", config, port, http_port)
        agent.masks = masks
        agent.start()
        assert agent.proc is not None
        pid = agent.proc.pid
        peak_rss = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                peak_rss[0] = max(peak_rss[0], _kib(pid, "VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            deadline = time.monotonic() + 300
            while "models loaded" not in agent.log():
                if time.monotonic() > deadline:
                    raise TimeoutError("the agent did not load its models")
                time.sleep(0.5)
            rss_idle = _kib(pid, "VmRSS")
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.associations) as pool:
                list(pool.map(lambda a: _send(port, *a), [(s, n) for n, s in enumerate(studies)]))
            sent_s = time.perf_counter() - t0
            print(f"sent in {sent_s:.1f} s; waiting for the jobs ...")
            deadline = time.monotonic() + 3600
            while True:
                rows = _query(agent.db_path, "select status, count(*) from jobs group by status")
                counts = {str(s): int(str(c)) for s, c in rows}
                final = sum(
                    v
                    for k, v in counts.items()
                    if k in ("done", "not_evaluated", "failed", "cancelled")
                )
                if (
                    final >= args.studies
                    and not counts.get("delivering")
                    and not counts.get("queued")
                    and not counts.get("running")
                ):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"jobs still under way: {counts}")
                time.sleep(0.5)
            wall_s = time.perf_counter() - t0
            peak_hwm = _kib(pid, "VmHWM")
            jobs = _query(
                agent.db_path,
                "select s.study_instance_uid, j.status from jobs j "
                "join studies s on s.id = j.study_id",
            )
            outputs = [
                str(r[0]) for r in _query(agent.db_path, "select sop_instance_uid from outputs")
            ]
        finally:
            stop.set()
            agent.stop()
            storescp.terminate()
            storescp.wait(10)

        per_study = Counter(str(uid) for uid, _ in jobs)
        statuses = Counter(str(status) for _, status in jobs)
        at_destination = Counter(
            str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in received.iterdir()
            if p.is_file()
        )
        expected = {s.study_instance_uid for s in studies}
        problems = []
        if set(per_study) != expected:
            problems.append(f"{len(expected - set(per_study))} studies without a job")
        if any(n != 1 for n in per_study.values()):
            problems.append(
                f"studies with more than one job: {sum(1 for n in per_study.values() if n > 1)}"
            )
        if statuses != Counter({"done": args.studies}):
            problems.append(f"job statuses {dict(statuses)}")
        if set(at_destination) != set(outputs) or any(n != 1 for n in at_destination.values()):
            dupes = sum(1 for n in at_destination.values() if n > 1)
            problems.append(
                f"destination holds {len(at_destination)} SOPs ({dupes} more than "
                f"once) for {len(outputs)} outputs"
            )

        cpus = os.cpu_count()
        print(f"\nmachine: {platform.machine()}, {cpus} CPUs; agent worker threads {args.workers}")
        print(
            f"studies: {args.studies} x {len(files_of(studies[0]))} instances, "
            f"{args.associations} concurrent storescu associations"
        )
        print(
            f"jobs: {dict(statuses)}; results at the destination: {len(at_destination)} SOPs "
            f"for {len(outputs)} outputs"
        )
        print(
            f"wall time (first C-STORE to last job done): {wall_s:.1f} s "
            f"({args.studies / wall_s * 60:.1f} studies/min); sending alone {sent_s:.1f} s"
        )
        print(
            f"agent memory: idle {rss_idle / 1024:.0f} MiB, peak RSS {peak_hwm / 1024:.0f} MiB "
            f"(VmHWM; sampled max {peak_rss[0] / 1024:.0f} MiB)"
        )
        print("exactly once: " + ("yes" if not problems else "NO: " + "; ".join(problems)))
        if problems:
            raise SystemExit(1)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")


if __name__ == "__main__":
    main()
