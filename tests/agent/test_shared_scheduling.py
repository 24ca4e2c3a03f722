"""Two agents on one database run their schedulers' study completion at the same time, on
purpose: no study is ever completed twice (one job per study, version 1), on SQLite and on
PostgreSQL (where the completion runs under an advisory lock: one agent at a time)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from agent.service import AgentService
from agent.settings import AgentRole
from storage.models import Job, JobStatus, Study, StudyStatus
from tests.agent.http_data import ingest, mr_series, settings_for


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        (tmp_path / "var").mkdir()
        return f"sqlite:///{tmp_path / 'var' / 'liver-agent.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def agents(tmp_path: Path, database_url: str) -> Iterator[list[AgentService]]:
    services = [
        AgentService(
            settings_for(
                tmp_path,
                database={"url": database_url},
                completion={"quiet_seconds": 0.0, "stable_seconds": 60.0},
                http={"enabled": False},
                cluster={"role": role},
            )
        )
        for role in (AgentRole.ALL, AgentRole.RECEIVER)
    ]
    yield services
    for service in services:
        service.ctx.ingestor.close()
        service.ctx.engine.dispose()


def test_two_schedulers_racing_never_complete_a_study_twice(
    agents: list[AgentService], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = agents
    import agent.service

    runs: list[tuple[float, float]] = []  # (start, end) of every completion pass, both agents
    real = agent.service.complete_ready_studies

    def timed(*args: Any, **kwargs: Any) -> list[int]:
        started = time.monotonic()
        time.sleep(0.01)  # widen the window in which the other agent could run at once
        try:
            return real(*args, **kwargs)
        finally:
            runs.append((started, time.monotonic()))

    monkeypatch.setattr(agent.service, "complete_ready_studies", timed)
    studies = [generate_uid() for _ in range(24)]
    for n, study_uid in enumerate(studies):
        datasets, _ = mr_series(study_uid, 2, rows=16)
        ingest(agents[n % 2].ctx, datasets)  # both agents receive (one shared spool)
    start = threading.Barrier(2)
    errors: list[Exception] = []

    def run_scheduler(service: AgentService) -> None:
        start.wait()
        try:
            for _ in range(15):
                service._check_completion()
        except Exception as err:  # noqa: BLE001 - surfaced below: a thread's error fails nothing
            errors.append(err)

    threads = [threading.Thread(target=run_scheduler, args=(s,)) for s in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    with first.ctx.sessions() as session:
        per_study = dict(
            session.execute(
                select(Study.study_instance_uid, func.count(Job.id))
                .join(Job, Job.study_id == Study.id)
                .group_by(Study.study_instance_uid)
            ).all()
        )
        assert per_study == dict.fromkeys(studies, 1)
        assert set(session.scalars(select(Job.version)).all()) == {1}
        assert set(session.scalars(select(Job.status)).all()) == {JobStatus.QUEUED}
        assert set(session.scalars(select(Study.status)).all()) == {StudyStatus.COMPLETE}
    completed = [
        service.ctx.metrics.studies_completed._value.get()  # type: ignore[attr-defined]
        for service in agents
    ]
    assert sum(completed) == len(studies)
    if database_url.startswith("postgresql"):  # the advisory lock: never two passes at once
        runs.sort()
        overlaps = [(a, b) for a, b in itertools.pairwise(runs) if b[0] < a[1]]
        assert overlaps == []
    assert second.receives  # the receiver role completes studies too
    assert not second.works
