"""When a newer version of a study's job exists before an older one is delivered, the PACS
gets only the newest: the older deliveries are cancelled, not sent (real DCMTK storescp)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.context import AgentContext, open_context
from agent.delivery import Deliverer
from storage.models import Delivery, DeliveryStatus, Job, JobStatus
from tests.agent.http_data import complete, ingest, mr_series
from tests.agent.test_delivery import StoreSCP, _job_with_result, _settings
from tests.integration.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def ctx(tmp_path: Path, port: int) -> Iterator[AgentContext]:
    context = open_context(_settings(tmp_path, port))
    yield context
    context.ingestor.close()
    context.engine.dispose()


@pytest.fixture
def scp(tmp_path: Path, port: int) -> Iterator[StoreSCP]:
    server = StoreSCP(tmp_path / "received", port)
    server.start()
    yield server
    server.stop()


def test_only_the_newest_version_is_delivered(ctx: AgentContext, scp: StoreSCP) -> None:
    old_job = _job_with_result(ctx)
    with ctx.sessions() as session:
        job = session.get_one(Job, old_job)
        assert job.status == JobStatus.DELIVERING
        study_uid = job.study.study_instance_uid
    # more images of the study arrive and it completes again: version 2
    more, _ = mr_series(study_uid, 2, rows=16)
    ingest(ctx, more)
    new_job = complete(ctx, study_uid)

    Deliverer(ctx.settings, ctx.sessions, ctx.metrics).deliver_due()

    assert scp.received() == [], "the superseded version's results reached the PACS"
    with ctx.sessions() as session:
        job = session.get_one(Job, old_job)
        assert job.status == JobStatus.CANCELLED
        assert job.reason_code == "superseded"
        assert str(new_job) in (job.reason or "")
        statuses = session.scalars(select(Delivery.status).where(Delivery.job_id == old_job))
        assert set(statuses) == {DeliveryStatus.CANCELLED}
