"""A delivery claimed by one agent, released as stale (its claim stopped being refreshed) and
claimed by another: the first agent's late attempt sends nothing; a live agent's refresh keeps
its claims from being released (real DCMTK storescp as the destination)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.context import AgentContext, open_context
from agent.delivery import Deliverer
from storage import jobs
from storage.models import Delivery, DeliveryStatus, utcnow
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


def test_a_stolen_claim_is_not_sent_twice(ctx: AgentContext, tmp_path: Path, port: int) -> None:
    _job_with_result(ctx)
    first = Deliverer(ctx.settings, ctx.sessions, ctx.metrics, name="agent-a:1")
    second = Deliverer(ctx.settings, ctx.sessions, ctx.metrics, name="agent-b:2")
    with ctx.sessions.begin() as session:
        ((delivery_id, _),) = jobs.claim_due_deliveries(
            session, now=utcnow(), claimed_by=first.name
        )
    first.refresh_claims()  # alive: a release of stale claims leaves it alone
    with ctx.sessions.begin() as session:
        cut = utcnow() - dt.timedelta(seconds=60)
        assert jobs.release_sending_deliveries(session, claimed_before=cut) == 0
    with ctx.sessions.begin() as session:  # ... until it stops refreshing (it hangs or died)
        session.get_one(Delivery, delivery_id).claimed_at = utcnow() - dt.timedelta(minutes=5)
        cut = utcnow() - dt.timedelta(seconds=60)
        assert jobs.release_sending_deliveries(session, claimed_before=cut) == 1
    scp = StoreSCP(tmp_path / "received", port)
    scp.start()
    try:
        assert second.deliver_due() == 1
        first.attempt(delivery_id)  # its late attempt: the claim is the other agent's now
        received = scp.received()
    finally:
        scp.stop()
    assert len(received) == 3  # SEG, SR, SC once
    with ctx.sessions() as session:
        delivery = session.get_one(Delivery, delivery_id)
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.DONE, 1)
