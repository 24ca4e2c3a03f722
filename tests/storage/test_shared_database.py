"""What several agents sharing one database rely on, on SQLite and PostgreSQL alike: the
migrations (schema = models, append-only event log), one migration when agents start together,
delivery claims with an owner that a dead sender's peers release, and exclusive periodic work."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydicom.uid import generate_uid
from sqlalchemy import delete, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from storage import jobs
from storage.db import current_revision, downgrade, head_revision, make_engine, upgrade
from storage.locks import exclusive
from storage.models import Base, Delivery, DeliveryStatus, JobEvent, JobStatus, OutputKind, utcnow
from tests.storage.test_jobs import add_jobs

Connect = Callable[[], sessionmaker[Session]]


def test_head_schema_matches_the_models(database: str) -> None:
    engine = make_engine(database)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_the_job_event_log_is_append_only(sessions: sessionmaker[Session]) -> None:
    (job_id,) = add_jobs(sessions, 1)
    with sessions.begin() as session:
        jobs.add_event(session, job_id, "status", "queued")  # type: ignore[arg-type]
    for change in (
        update(JobEvent).values(message="rewritten"),
        delete(JobEvent),
    ):
        with pytest.raises(DBAPIError, match="append-only"), sessions.begin() as session:
            session.execute(change)
    with sessions() as session:
        assert [e.message for e in session.query(JobEvent).all()] == ["queued"]


def test_downgrade_and_upgrade_again(database: str) -> None:
    engine = make_engine(database)
    downgrade(engine, "0002")
    assert current_revision(engine) == "0002"
    assert upgrade(engine) == "0002"
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_agents_starting_together_migrate_once(request: pytest.FixtureRequest) -> None:
    """Four agents upgrade an empty PostgreSQL database at the same moment: all succeed, and
    exactly one found it empty (the others waited for the advisory lock, then found the
    head)."""
    url = request.getfixturevalue("postgres_url")
    engines = [make_engine(url) for _ in range(4)]
    start = threading.Barrier(len(engines))

    def start_agent(n: int) -> str | None:
        start.wait()
        return upgrade(engines[n])

    with ThreadPoolExecutor(len(engines)) as pool:
        found = list(pool.map(start_agent, range(len(engines))))
    assert sorted(found, key=lambda r: r or "") == [None] + [head_revision()] * 3
    with engines[0].connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1
    for engine in engines:
        engine.dispose()


def _delivery(sessions: sessionmaker[Session]) -> int:
    (job_id,) = add_jobs(sessions, 1, JobStatus.DELIVERING)
    with sessions.begin() as session:
        output = jobs.add_output(
            session,
            job_id,
            kind=OutputKind.SR,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
            sop_instance_uid=generate_uid(),
            series_instance_uid=generate_uid(),
            path="/results/sr.dcm",
            size_bytes=1,
        )
        session.flush()
        return jobs.add_delivery(session, job_id, "pacs", [output]).id


def test_due_deliveries_are_claimed_once_by_racing_agents(connect: Connect) -> None:
    first = connect()
    ids = sorted(_delivery(first) for _ in range(30))
    agents = [connect() for _ in range(3)]
    start = threading.Barrier(len(agents))

    def scan(n: int) -> list[int]:
        start.wait()
        mine: list[int] = []
        for _ in range(10):
            with agents[n].begin() as session:
                claimed = jobs.claim_due_deliveries(
                    session, now=utcnow(), claimed_by=f"agent{n}", limit=4
                )
            mine += [delivery_id for delivery_id, _ in claimed]
        return mine

    with ThreadPoolExecutor(len(agents)) as pool:
        claimed = list(pool.map(scan, range(len(agents))))
    assert sorted(d for mine in claimed for d in mine) == ids
    with first() as session:
        owners = {d.id: d.claimed_by for d in session.query(Delivery).all()}
        assert {d.status for d in session.query(Delivery).all()} == {DeliveryStatus.SENDING}
    assert all(owners[d] == f"agent{n}" for n, mine in enumerate(claimed) for d in mine)


def test_only_stale_claims_are_released(sessions: sessionmaker[Session]) -> None:
    live, dead = _delivery(sessions), _delivery(sessions)
    with sessions.begin() as session:
        assert len(jobs.claim_due_deliveries(session, now=utcnow(), claimed_by="a")) == 2
        session.get_one(Delivery, dead).claimed_at = utcnow() - dt.timedelta(minutes=10)
    with sessions.begin() as session:
        jobs.refresh_delivery_claims(session, [live])
        cut = utcnow() - dt.timedelta(minutes=2)
        assert jobs.release_sending_deliveries(session, claimed_before=cut) == 1
    with sessions() as session:
        assert session.get_one(Delivery, live).status == DeliveryStatus.SENDING
        released = session.get_one(Delivery, dead)
        assert (released.status, released.claimed_by) == (DeliveryStatus.PENDING, None)


def test_periodic_work_is_exclusive_on_postgresql(database: str) -> None:
    """Two agents try the same periodic work at once: on PostgreSQL one gets it, the other
    skips; after the holder is done (or its connection is gone) the next one gets it. On
    SQLite (one machine owns the file) the lock is always granted."""
    a, b = make_engine(database), make_engine(database)
    with exclusive(a, "completion") as first:
        assert first is True
        with exclusive(b, "completion") as second:
            assert second is database.startswith("sqlite")
        with exclusive(b, "retention") as other_work:
            assert other_work is True
    with exclusive(b, "completion") as after:
        assert after is True
    a.dispose()
    b.dispose()


def test_receivers_recording_one_new_study_at_once_make_one_study_row(connect: Connect) -> None:
    """Four receivers record instances of the same new study and series at the same moment:
    one study row, one series row, every instance (on PostgreSQL they take turns on the
    study's advisory lock; on SQLite its write lock)."""
    from storage import queries
    from storage.models import Instance, Series, Study
    from storage.queries import InstanceRecord

    study_uid, series_uid = generate_uid(), generate_uid()
    receivers = [connect() for _ in range(4)]
    start = threading.Barrier(len(receivers))

    def receive(n: int) -> list[str]:
        start.wait()
        uids = []
        for _ in range(5):
            uid = generate_uid()
            with receivers[n].begin() as session:
                queries.record_instance(
                    session,
                    InstanceRecord(
                        study_instance_uid=study_uid,
                        series_instance_uid=series_uid,
                        sop_instance_uid=uid,
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                        transfer_syntax_uid="1.2.840.10008.1.2.1",
                        path=f"{study_uid}/{series_uid}/{uid}.dcm",
                        size_bytes=1,
                    ),
                    association_id=None,
                    source_ae=f"PACS{n}",
                )
            uids.append(uid)
        return uids

    with ThreadPoolExecutor(len(receivers)) as pool:
        sent = [uid for uids in pool.map(receive, range(len(receivers))) for uid in uids]
    with receivers[0]() as session:
        (study,) = session.query(Study).all()
        assert study.instance_count == len(sent)
        (series,) = session.query(Series).all()
        assert series.instance_count == len(sent)
        assert sorted(i.sop_instance_uid for i in session.query(Instance).all()) == sorted(sent)
