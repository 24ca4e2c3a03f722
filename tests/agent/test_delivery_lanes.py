"""A destination that accepts connections and never answers holds up only itself: a healthy
DIMSE destination (real DCMTK storescp) is served at once, the silent one fails after the
agent's own timeout (no hidden client retries), and the lanes stop within seconds."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.context import AgentContext, open_context
from agent.delivery import Deliverer
from agent.delivery_lanes import DeliveryLanes
from agent.settings import load_settings
from storage.models import Delivery, DeliveryStatus
from tests.agent.test_delivery import StoreSCP, _job_with_result
from tests.integration.processes import free_port

pytestmark = pytest.mark.integration

TIMEOUT = 2.0


class BlackHole:
    """A loopback TCP server that accepts every connection and never reads or answers."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.server.settimeout(0.2)
        self.port = int(self.server.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.server.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture
def setup(tmp_path: Path, black_hole: BlackHole) -> Iterator[tuple[AgentContext, StoreSCP]]:
    port = free_port()
    settings = load_settings(
        None,
        database={"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        spool={"path": tmp_path / "spool", "min_free_mb": 0},
        results={"path": tmp_path / "results"},
        destinations=[
            {
                "name": "silent",
                "stow_url": f"http://127.0.0.1:{black_hole.port}/dicom-web",
                "route": "always",
            },
            {"name": "pacs", "ae_title": "DEST", "host": "127.0.0.1", "port": port},
        ],
        delivery={"retry_seconds": [600.0], "poll_seconds": 0.1, "timeout_seconds": TIMEOUT},
    )
    ctx = open_context(settings)
    scp = StoreSCP(tmp_path / "received", port)
    scp.start()
    try:
        yield ctx, scp
    finally:
        scp.stop()
        ctx.ingestor.close()
        ctx.engine.dispose()


def _deliveries(ctx: AgentContext, job_id: int) -> dict[str, Delivery]:
    with ctx.sessions() as session:
        rows = session.scalars(select(Delivery).where(Delivery.job_id == job_id)).all()
        return {d.destination: d for d in rows}


def _wait(predicate: object, deadline: float) -> float:
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_silent_destination_does_not_hold_up_another(
    setup: tuple[AgentContext, StoreSCP], black_hole: BlackHole
) -> None:
    ctx, scp = setup
    job_id = _job_with_result(ctx)
    assert set(_deliveries(ctx, job_id)) == {"silent", "pacs"}
    lanes = DeliveryLanes()
    deliverer = Deliverer(ctx.settings, ctx.sessions, ctx.metrics, lanes=lanes)
    start = time.monotonic()
    # as the scheduler calls it; a background thread so that a blocking call fails the test
    # by its deadlines instead of hanging it
    caller = threading.Thread(target=deliverer.deliver_due, daemon=True)
    caller.start()
    caller.join(1.0)
    assert not caller.is_alive(), "deliver_due waits for the attempts"

    healthy = _wait(lambda: _deliveries(ctx, job_id)["pacs"].status == DeliveryStatus.DONE, 10)
    assert healthy < TIMEOUT, f"the healthy destination waited {healthy:.1f} s"
    assert scp.received()
    assert black_hole.accepted, "the silent destination was not even tried"

    _wait(lambda: _deliveries(ctx, job_id)["silent"].attempts == 1, 5 * TIMEOUT)
    silent_took = time.monotonic() - start
    silent = _deliveries(ctx, job_id)["silent"]
    assert silent.status == DeliveryStatus.PENDING  # retry later, on the agent's schedule
    assert silent.last_error, "the failed attempt says why"
    # one request, bounded by the agent's timeout: no hidden retries of the client library
    assert silent_took < 2 * TIMEOUT + 2, f"the silent attempt took {silent_took:.1f} s"
    assert len(black_hole.accepted) == 1

    # shutdown while an attempt hangs: the lanes stop at once
    with ctx.sessions.begin() as session:
        row = session.scalars(
            select(Delivery).where(Delivery.job_id == job_id, Delivery.destination == "silent")
        ).one()
        row.next_attempt_at = row.created_at
    deliverer.deliver_due()
    _wait(lambda: len(black_hole.accepted) == 2, 5)
    stopping = time.monotonic()
    lanes.stop(timeout=2.0)
    assert time.monotonic() - stopping < 2.5
    assert not lanes.submit("pacs", lambda: None)
