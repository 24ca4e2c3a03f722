"""What the database costs per job, on SQLite and PostgreSQL, and how many jobs a minute 1, 2
and 3 worker processes finish on one PostgreSQL.

Part 1 (in this process, real agent code): ingest a small phantom study through the ingestor,
complete it, run it through a real :class:`agent.worker.Worker` (test bundles, the phantom's
true liver mask in place of the untrained segmentation network) and deliver its SEG and SR to a
DCMTK storescp through a real :class:`agent.delivery.Deliverer`. Every SQL statement and
commit is counted and timed with SQLAlchemy's cursor events: the figures are the database's
share of one job (statements, milliseconds of driver time), stage by stage.

Part 2 (processes): a throwaway PostgreSQL (tests/pg.py) holding N queued jobs; K worker
processes (``serve --role worker``) run them; jobs/minute = N / (last finish - first start).

    .venv/bin/python -m bench.db_cost [--jobs 12] [--workers 1 2 3] [--studies 5]

Needs Debian's postgresql and DCMTK; PostgreSQL runs as the ``postgres`` user when run as root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text

from tests.bundles import write_test_bundles
from tests.pg import PostgresServer, find_bin_dir, start_server

SLICES = 24  # as tests/integration/test_scale_out.py (truth_phantom)


class QueryMeter:
    """Counts statements and commits on an engine and sums their driver time, by stage."""

    def __init__(self, engine: Engine) -> None:
        self.stage = "other"
        self.count: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self._local = threading.local()
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "commit", self._commit_before)

    def _before(self, *_args: Any) -> None:
        self._local.started = time.perf_counter()

    def _after(self, *_args: Any) -> None:
        self.count[self.stage] += 1
        self.seconds[self.stage] += time.perf_counter() - self._local.started

    def _commit_before(self, conn: Any) -> None:
        # the commit's own time is not visible to SQLAlchemy events; count it as a statement
        self.count[self.stage] += 1

    @contextmanager
    def measuring(self, stage: str) -> Iterator[None]:
        self.stage = stage
        try:
            yield
        finally:
            self.stage = "other"


def _phantom(folder: Path, masks: Path, seed: int) -> list[Path]:
    from pipeline.phantoms import generate_study
    from tests.integration.truth_agent import save_mask

    study = generate_study(
        folder,
        cirrhotic=seed % 2 == 0,
        seed=seed,
        roles=("ax_t2",),
        axial_t2_slices=SLICES,
        matrix=64,
    )
    assert study.target_series_uid is not None
    assert study.liver_mask is not None
    save_mask(masks, study.target_series_uid, study.liver_mask)
    return [f for series in study.series for f in series.files]


def db_cost(url: str, root: Path, studies: int) -> dict[str, tuple[float, float]]:
    """Per-job statements and driver milliseconds on the database at ``url``, by stage
    (median over ``studies`` jobs)."""
    from agent.completion import complete_ready_studies
    from agent.context import open_context
    from agent.delivery import Deliverer
    from agent.settings import load_settings
    from agent.worker import Worker
    from storage.models import AssociationStatus
    from tests.agent.test_delivery import StoreSCP
    from tests.integration.processes import free_port
    from tests.integration.truth_agent import MASKS_ENV, _patch_models

    masks = root / "masks"
    os.environ[MASKS_ENV] = str(masks)
    _patch_models()
    bundles = write_test_bundles(root / "bundles")
    port = free_port()
    settings = load_settings(
        None,
        database={"url": url},
        spool={"path": root / "spool", "min_free_mb": 0},
        results={"path": root / "results"},
        model={"segmentation": bundles[0], "classification": bundles[1], "device": "cpu"},
        completion={"quiet_seconds": 0.0},
        worker={"threads": 1, "heartbeat_seconds": 60},
        destinations=[
            {
                "name": "pacs",
                "ae_title": "DEST",
                "host": "127.0.0.1",
                "port": port,
                "route": "always",
                "send": {"seg": True, "sr": True},
            }
        ],
    )
    ctx = open_context(settings)
    meter = QueryMeter(ctx.engine)
    scp = StoreSCP(root / "received", port)
    scp.start()
    ctx.models.start()
    ctx.models.get(timeout=300)
    worker = Worker(
        settings, ctx.sessions, ctx.spool, ctx.models, ctx.metrics, threading.Event(), "bench:0"
    )
    deliverer = Deliverer(settings, ctx.sessions, ctx.metrics, name="bench")
    per_job: dict[str, list[tuple[int, float]]] = defaultdict(list)
    try:
        for n in range(studies):
            files = _phantom(root / "studies" / f"s{n}", masks, seed=n)
            before = (dict(meter.count), dict(meter.seconds))
            with meter.measuring("ingest"):
                assoc = ctx.ingestor.begin(
                    calling_ae="PACS", called_ae="LIVERAI", peer_host="127.0.0.1", protocol="dimse"
                )
                for path in files:
                    ctx.ingestor.store(path.read_bytes(), association_id=assoc, source_ae="PACS")
                ctx.ingestor.end(assoc, AssociationStatus.RELEASED)
            with meter.measuring("completion"):
                assert (
                    len(complete_ready_studies(ctx.sessions, settings.completion, ctx.metrics)) == 1
                )
            with meter.measuring("job"):
                assert worker.run_one()
            with meter.measuring("delivery"):
                assert deliverer.deliver_due() == 1
            for stage in ("ingest", "completion", "job", "delivery"):
                per_job[stage].append(
                    (
                        meter.count[stage] - before[0].get(stage, 0),
                        meter.seconds[stage] - before[1].get(stage, 0.0),
                    )
                )
    finally:
        scp.stop()
        ctx.ingestor.close()
        ctx.engine.dispose()
    return {
        stage: (
            statistics.median(c for c, _ in rows),
            statistics.median(s for _, s in rows) * 1000,
        )
        for stage, rows in per_job.items()
    }


def round_trip_ms(url: str, count: int = 300) -> float:
    """Median milliseconds of one ``SELECT 1`` on an open connection: the machine's floor for
    every statement (on a loaded machine mostly the wait for the server process to run)."""
    engine = create_engine(url)
    times = []
    with engine.connect() as conn:
        for _ in range(count):
            started = time.perf_counter()
            conn.execute(text("SELECT 1"))
            times.append(time.perf_counter() - started)
    engine.dispose()
    return statistics.median(times) * 1000


def _prepare_queue(
    server: PostgresServer, root: Path, jobs: int
) -> tuple[str, Path, tuple[Path, Path]]:
    """A new database with ``jobs`` queued jobs (phantom studies ingested and completed)."""
    from agent.completion import complete_ready_studies
    from agent.context import open_context
    from agent.settings import load_settings
    from storage.models import AssociationStatus

    url = server.create_database()
    masks = root / "masks"
    settings = load_settings(
        None,
        database={"url": url},
        spool={"path": root / "spool", "min_free_mb": 0},
        completion={"quiet_seconds": 0.0},
    )
    ctx = open_context(settings)
    for n in range(jobs):
        files = _phantom(root / "studies" / f"s{n}", masks, seed=n)
        assoc = ctx.ingestor.begin(
            calling_ae="PACS", called_ae="LIVERAI", peer_host="127.0.0.1", protocol="dimse"
        )
        for path in files:
            ctx.ingestor.store(path.read_bytes(), association_id=assoc, source_ae="PACS")
        ctx.ingestor.end(assoc, AssociationStatus.RELEASED)
    assert len(complete_ready_studies(ctx.sessions, settings.completion, ctx.metrics)) == jobs
    ctx.ingestor.close()
    ctx.engine.dispose()
    return url, masks, write_test_bundles(root / "bundles")


def jobs_per_minute(server: PostgresServer, root: Path, jobs: int, workers: int) -> float:
    """Start ``workers`` worker processes on a queue of ``jobs`` jobs; jobs a minute."""
    import yaml

    from tests.integration.processes import free_port
    from tests.integration.truth_agent import MASKS_ENV, REPO

    url, masks, bundles = _prepare_queue(server, root, jobs)
    procs: list[subprocess.Popen[bytes]] = []
    for n in range(workers):
        workdir = root / f"worker{n}"
        workdir.mkdir()
        config = {
            "database": {"url": url},
            "spool": {"path": str(root / "spool"), "min_free_mb": 0},
            "results": {"path": str(root / "results")},
            "model": {
                "segmentation": str(bundles[0]),
                "classification": str(bundles[1]),
                "device": "cpu",
            },
            "worker": {"threads": 1},
            "http": {"enabled": True, "host": "127.0.0.1", "port": free_port()},
            "cluster": {"role": "worker"},
        }
        (workdir / "liver-agent.yaml").write_text(yaml.safe_dump(config))
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            MASKS_ENV: str(masks),
            "OMP_WAIT_POLICY": "PASSIVE",
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.truth_agent",
                    "serve",
                    "--config",
                    str(workdir / "liver-agent.yaml"),
                ],
                cwd=workdir,
                env=env,
                stdout=(workdir / "log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    engine = create_engine(url)
    try:
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                left = conn.scalar(
                    text("select count(*) from jobs where status in ('queued', 'running')")
                )
            if left == 0:
                break
            time.sleep(0.5)
        with engine.connect() as conn:
            first, last, finished = conn.execute(
                text(
                    "select min(started_at), max(finished_at), count(*) from jobs "
                    "where finished_at is not null"
                )
            ).one()
            statuses = dict(
                conn.execute(text("select status, count(*) from jobs group by status")).all()
            )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        engine.dispose()
    print(f"    ({workers} workers: {statuses})")
    assert finished == jobs, f"{finished} of {jobs} jobs finished: {statuses}"
    return float(jobs / ((last - first).total_seconds() / 60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12, help="jobs per throughput run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--studies", type=int, default=5, help="jobs measured for the cost")
    parser.add_argument(
        "--parts", nargs="+", choices=["cost", "throughput"], default=["cost", "throughput"]
    )
    args = parser.parse_args()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL binaries not found (apt-get install postgresql)")
    print(f"{os.cpu_count()} CPUs; phantom studies of {SLICES} axial T2 slices, 64 x 64")
    server = start_server(bin_dir)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            print(f"load average {os.getloadavg()[0]:.1f}")
            sqlite_url = f"sqlite:///{root / 'rt.db'}"
            print(
                f"SELECT 1 round trip: SQLite {round_trip_ms(sqlite_url):.3f} ms, "
                f"PostgreSQL {round_trip_ms(server.create_database()):.3f} ms"
            )
            if "cost" in args.parts:
                print("\ndatabase cost per job (median statements incl. commits / driver ms):")
                print(f"{'stage':<12}{'SQLite':>22}{'PostgreSQL':>22}")
                sqlite = db_cost(
                    f"sqlite:///{root / 'sqlite' / 'agent.db'}", root / "sqlite", args.studies
                )
                pg = db_cost(server.create_database(), root / "pg", args.studies)
                for stage in sqlite:
                    (cs, ms), (cp, mp) = sqlite[stage], pg[stage]
                    print(f"{stage:<12}{cs:>10.0f} / {ms:>7.1f} ms{cp:>10.0f} / {mp:>7.1f} ms")
                total = [sum(v[i] for v in d.values()) for d in (sqlite, pg) for i in (0, 1)]
                print(
                    f"{'total':<12}{total[0]:>10.0f} / {total[1]:>7.1f} ms"
                    f"{total[2]:>10.0f} / {total[3]:>7.1f} ms"
                )
            if "throughput" in args.parts:
                print(f"\njobs per minute on one PostgreSQL ({args.jobs} queued jobs):")
                for k in args.workers:
                    rate = jobs_per_minute(server, root / f"tp{k}", args.jobs, k)
                    print(f"  {k} worker process{'es' if k > 1 else ''}: {rate:6.1f} jobs/min")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
