"""Proof of delivery against a real Orthanc: after the C-STOREs the agent asks for Storage
Commitment (N-ACTION); Orthanc answers with an N-EVENT-REPORT on a new association to the
agent's SCP. The delivery is ``committed`` and the job ``done`` only when every object is
confirmed; an object Orthanc does not hold, or no report at all, fails the attempt with a
reason and it is retried."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from agent.context import AgentContext, open_context
from agent.delivery import Deliverer
from agent.scp import StorageSCP
from agent.settings import load_settings
from agent.storage_commitment import CommitmentWaiters
from storage.models import Delivery, DeliveryItem, DeliveryStatus, Job, JobStatus, utcnow
from tests.agent.test_delivery import _job, _job_with_result
from tests.integration.orthanc import Modality, orthanc_missing, running_orthanc
from tests.integration.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _needs_orthanc() -> None:
    missing = orthanc_missing()
    if missing:
        pytest.fail(missing)


class Agent:
    """The agent's database, its SCP (where Orthanc sends reports) and its deliverer."""

    def __init__(self, workdir: Path, orthanc_port: int, scp_port: int, timeout: float) -> None:
        settings = load_settings(
            None,
            dicom={"ae_title": "LIVERAI", "host": "127.0.0.1", "port": scp_port},
            database={"url": f"sqlite:///{workdir / 'db.sqlite'}"},
            spool={"path": workdir / "spool", "min_free_mb": 0},
            results={"path": workdir / "results"},
            destinations=[
                {
                    "name": "pacs",
                    "ae_title": "ORTHANC",
                    "host": "127.0.0.1",
                    "port": orthanc_port,
                    "route": "always",
                    "send": {"seg": True, "sr": True, "sc": False},
                    "storage_commitment": True,
                }
            ],
            delivery={
                "retry_seconds": [0.0, 0.0, 0.0],
                "commitment_timeout_seconds": timeout,
            },
        )
        self.ctx: AgentContext = open_context(settings)
        self.commitments = CommitmentWaiters()
        self.scp = StorageSCP(
            settings.dicom, self.ctx.ingestor, self.ctx.metrics, commitments=self.commitments
        )
        self.scp.start()
        self.deliverer = Deliverer(
            settings, self.ctx.sessions, self.ctx.metrics, commitments=self.commitments
        )

    def close(self) -> None:
        self.scp.stop()
        self.ctx.ingestor.close()
        self.ctx.engine.dispose()

    def deliver(self) -> Delivery:
        """Run every due attempt (inline) and return the job's one delivery."""
        with self.ctx.sessions.begin() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.status == DeliveryStatus.PENDING)
                .values(next_attempt_at=utcnow())
            )
        assert self.deliverer.deliver_due() == 1
        with self.ctx.sessions() as session:
            (delivery,) = session.scalars(select(Delivery)).all()
            for item in delivery.items:
                _ = item.output
            return delivery


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Agent] = []

    def make(orthanc_port: int, scp_port: int, timeout: float = 20.0) -> Agent:
        agent = Agent(tmp_path / f"agent{len(made)}", orthanc_port, scp_port, timeout)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


def _orthanc_holds(orthanc: Any, sop_uid: str) -> bool:
    found = orthanc.post("/tools/lookup", data=sop_uid.encode())
    return any(f["Type"] == "Instance" for f in found)


def test_committed_and_done_when_orthanc_confirms_every_object(
    tmp_path: Path, agent_factory: Any
) -> None:
    scp_port = free_port()
    with running_orthanc(
        tmp_path / "orthanc", modalities={"liveragent": Modality("LIVERAI", scp_port)}
    ) as orthanc:
        agent: Agent = agent_factory(orthanc.dicom_port, scp_port)
        job_id = _job_with_result(agent.ctx)

        delivery = agent.deliver()

        assert delivery.status == DeliveryStatus.COMMITTED, delivery.last_error
        assert delivery.last_error is None
        job = _job(agent.ctx, job_id)
        assert job.status == JobStatus.DONE
        assert all(_orthanc_holds(orthanc, o.sop_instance_uid) for o in job.outputs)
        (delivered,) = [e for e in job.events if e.kind == "delivered"]
        assert "storage commitment: all 2 objects committed" in delivered.message
        assert agent.commitments.pending() == 0
        assert "StorageCommitment" in orthanc.log() or "commitment" in orthanc.log().lower()


def test_an_object_orthanc_lacks_fails_then_is_stored_again_and_committed(
    tmp_path: Path, agent_factory: Any
) -> None:
    scp_port = free_port()
    with running_orthanc(
        tmp_path / "orthanc", modalities={"liveragent": Modality("LIVERAI", scp_port)}
    ) as orthanc:
        agent: Agent = agent_factory(orthanc.dicom_port, scp_port)
        job_id = _job_with_result(agent.ctx)
        # the SR counts as sent already (say, by an attempt whose PACS then lost it): the
        # agent stores only the SEG, and asks Orthanc to commit both
        with agent.ctx.sessions.begin() as session:
            job = session.get_one(Job, job_id)
            sr = next(o for o in job.outputs if o.kind == "sr")
            (delivery,) = job.deliveries
            item = next(i for i in delivery.items if i.output_id == sr.id)
            session.get_one(DeliveryItem, item.id).sent_at = utcnow()
            sr_uid = sr.sop_instance_uid

        first = agent.deliver()

        assert first.status == DeliveryStatus.PENDING
        assert first.last_error is not None
        assert first.last_error.startswith("commitment_failed:")
        assert f"{sr_uid} (no such object instance)" in first.last_error
        assert "did not commit 1 of 2 objects" in first.last_error
        assert _job(agent.ctx, job_id).status == JobStatus.DELIVERING
        assert not _orthanc_holds(orthanc, sr_uid)
        item_sent = {i.output.sop_instance_uid: i.sent_at for i in first.items}
        assert item_sent[sr_uid] is None, "the uncommitted object is not sent again"

        second = agent.deliver()

        assert second.status == DeliveryStatus.COMMITTED, second.last_error
        assert second.attempts == 2
        assert _orthanc_holds(orthanc, sr_uid)
        assert _job(agent.ctx, job_id).status == JobStatus.DONE


def test_a_refusal_or_no_report_fails_the_attempt_with_a_reason_and_it_is_retried(
    tmp_path: Path, agent_factory: Any
) -> None:
    scp_port = free_port()
    # Orthanc does not know the agent yet (no DicomModalities entry)
    with running_orthanc(tmp_path / "orthanc") as orthanc:
        agent: Agent = agent_factory(orthanc.dicom_port, scp_port, timeout=3.0)
        job_id = _job_with_result(agent.ctx)

        refused = agent.deliver()

        assert refused.status == DeliveryStatus.PENDING
        assert refused.last_error is not None
        assert refused.last_error.startswith("commitment_refused: pacs: the destination ended")
        assert "DicomModalities" in refused.last_error
        assert all(i.sent_at is not None for i in refused.items), "stored, only not confirmed"

        # Orthanc knows the agent at a port where nothing listens: no report ever comes
        orthanc.add_modality("liveragent", Modality("LIVERAI", free_port()))
        silent = agent.deliver()

        assert silent.status == DeliveryStatus.PENDING
        assert silent.last_error is not None
        assert silent.last_error.startswith("commitment_timeout: no storage commitment report")
        assert "within 3 s" in silent.last_error
        job = _job(agent.ctx, job_id)
        assert job.status == JobStatus.DELIVERING
        assert all(_orthanc_holds(orthanc, o.sop_instance_uid) for o in job.outputs)

        # the PACS learns the agent's address: the retry asks again (stores nothing) and commits
        orthanc.add_modality("liveragent", Modality("LIVERAI", scp_port))
        committed = agent.deliver()

        assert committed.status == DeliveryStatus.COMMITTED, committed.last_error
        assert committed.attempts == 3
        assert _job(agent.ctx, job_id).status == JobStatus.DONE
