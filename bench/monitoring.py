"""How long the monitoring report takes (``GET /api/monitoring``, ``/api/alerts``, the page, and
every ``/metrics`` scrape compute it) for N jobs with feedback in a real SQLite file.

    .venv/bin/python -m bench.monitoring [--jobs 1000 10000] [--runs 5]

Each job has a finding, a probability, drift details and one verdict; one model version.
Prints the median of ``runs`` reports per size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from agent.monitoring import monitoring_report
from agent.settings import MonitoringSettings
from storage.db import make_engine, make_sessionmaker, upgrade
from storage.models import Feedback, Job, JobStatus, Study, utcnow


def fill(url: str, n: int, seed: int = 0) -> None:
    """N studies, jobs with findings over the last 60 days, and one verdict each."""
    rng = random.Random(seed)
    engine = make_engine(url)
    upgrade(engine)
    now = utcnow().replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(
            insert(Study),
            [
                {"id": i + 1, "study_instance_uid": f"1.2.3.{i}", "accession_number": f"B{i}"}
                for i in range(n)
            ],
        )
        jobs = []
        for i in range(n):
            p = rng.random()
            jobs.append(
                {
                    "id": i + 1,
                    "study_id": i + 1,
                    "status": JobStatus.DONE,
                    "evaluated": True,
                    "label": "cirrhosis" if p >= 0.5 else "no cirrhosis",
                    "probability": p,
                    "model_name": "liver-cls",
                    "model_version": "1.0",
                    "created_at": (now - dt.timedelta(minutes=rng.randrange(60 * 24 * 60))).replace(
                        tzinfo=dt.UTC
                    ),
                    "details": {"drift": {"flagged": rng.random() < 0.05, "reasons": []}},
                }
            )
        conn.execute(insert(Job), jobs)
        conn.execute(
            insert(Feedback),
            [
                {
                    "job_id": i + 1,
                    "agree": rng.random() < 0.9,
                    "reference_positive": rng.random() < 0.5,
                    "wrong_slice": False,
                    "wrong_outline": False,
                    "user": "bench",
                    "source": "api",
                }
                for i in range(n)
            ],
        )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for n in args.jobs:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
            fill(url, n)
            engine = make_engine(url)
            sessions = make_sessionmaker(engine)
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                with sessions() as session:
                    report = monitoring_report(session, MonitoringSettings())
                times.append(time.perf_counter() - started)
            engine.dispose()
            cases = report.models[0].agreement.cases
            print(
                f"{n:>6} jobs ({cases} with feedback): monitoring report median "
                f"{statistics.median(times) * 1000:.0f} ms over {args.runs} runs "
                f"(min {min(times) * 1000:.0f} ms)"
            )


if __name__ == "__main__":
    main()
