"""T2-first processing: the job starts when the axial T2 series is complete, while the study is
still arriving; at study completion it stands, or a new version replaces it. Real SQLite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from agent.completion import complete_ready_studies
from agent.context import AgentContext, open_context
from agent.t2_first import SNAPSHOT_KEY, T2First, snapshot_limit
from storage import queries
from storage.models import (
    AssociationStatus,
    EventKind,
    Instance,
    Job,
    JobEvent,
    JobStatus,
    Series,
    Study,
    StudyStatus,
    utcnow,
)
from tests.agent.http_data import mr_series, part10, settings_for

QUIET = 5.0
SERIES_QUIET = 1.0


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    context = open_context(
        settings_for(
            tmp_path,
            completion={
                "quiet_seconds": QUIET,
                "stable_seconds": 60.0,
                "series_quiet_seconds": SERIES_QUIET,
            },
        )
    )
    yield context
    context.ingestor.close()
    context.engine.dispose()


@pytest.fixture
def t2(ctx: AgentContext) -> T2First:
    return T2First(ctx.sessions, ctx.spool, ctx.settings.completion)


class Sender:
    """One open association that sends series of one study, as a PACS does."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.study_uid = generate_uid()
        self.association = ctx.ingestor.begin(
            calling_ae="PACS", called_ae="LIVERAI", peer_host="127.0.0.1", protocol="dimse"
        )

    def series(
        self,
        description: str,
        n: int,
        *,
        series_uid: str | None = None,
        number: int = 3,
        images_in_acquisition: int | None = None,
        first: int = 0,
    ) -> str:
        datasets, _ = mr_series(
            self.study_uid,
            first + n,
            rows=16,
            description=description,
            series_uid=series_uid,
            series_number=number,
        )
        for ds in datasets[first:]:
            if images_in_acquisition is not None:
                ds.ImagesInAcquisition = images_in_acquisition
            self.ctx.ingestor.store(part10(ds), association_id=self.association, source_ae="PACS")
        return str(datasets[0].SeriesInstanceUID)

    def release(self) -> None:
        self.ctx.ingestor.end(self.association, AssociationStatus.RELEASED)

    def age(self, seconds: float, *, series_uid: str | None = None) -> None:
        """Make what arrived (of one series, or of the whole study) ``seconds`` old."""
        past = utcnow() - dt.timedelta(seconds=seconds)
        with self.ctx.sessions.begin() as session:
            study_id = queries.study_id_of(session, self.study_uid)
            series = select(Series.id).where(Series.study_id == study_id)
            if series_uid is not None:
                series = series.where(Series.series_instance_uid == series_uid)
            session.execute(
                update(Instance).where(Instance.series_id.in_(series)).values(received_at=past)
            )
            if series_uid is None:
                session.execute(
                    update(Study).where(Study.id == study_id).values(last_received_at=past)
                )

    def jobs(self) -> list[Job]:
        with self.ctx.sessions() as session:
            study_id = queries.study_id_of(session, self.study_uid)
            found = session.scalars(select(Job).where(Job.study_id == study_id)).all()
            session.expunge_all()
            return sorted(found, key=lambda j: j.version)

    def status(self) -> StudyStatus:
        with self.ctx.sessions() as session:
            study_id = queries.study_id_of(session, self.study_uid)
            return session.get_one(Study, study_id).status


def _check(ctx: AgentContext, t2: T2First) -> list[int]:
    """What the service does: its series watch, then its completion check."""
    started = t2.start_ready_series(utcnow())
    return started + complete_ready_studies(
        ctx.sessions, ctx.settings.completion, ctx.metrics, t2_first=t2
    )


def test_the_job_starts_when_the_t2_series_is_complete_while_the_study_arrives(
    ctx: AgentContext, t2: T2First
) -> None:
    sender = Sender(ctx)
    sender.series("localizer", 3, number=1)
    sender.series("t1_vibe_tra", 10, number=2)
    t2_uid = sender.series("t2_tse_tra", 12, number=3)
    assert _check(ctx, t2) == [], "started on a series whose images are still arriving"
    sender.age(SERIES_QUIET + 0.5)
    created = _check(ctx, t2)
    assert len(created) == 1
    assert sender.status() == StudyStatus.RECEIVING  # the study itself is not complete
    (job,) = sender.jobs()
    snapshot = (job.details or {})[SNAPSHOT_KEY]
    assert snapshot["series_instance_uid"] == t2_uid
    assert snapshot["instance_count"] == 12
    assert snapshot["instance_count_study"] == 25
    assert "regular stack of 12 slices" in snapshot["rule"]
    assert _check(ctx, t2) == [], "a second job for the same series"


def test_a_series_with_images_still_announced_waits(ctx: AgentContext, t2: T2First) -> None:
    sender = Sender(ctx)
    uid = sender.series("t2_tse_tra", 8, images_in_acquisition=12)
    sender.age(SERIES_QUIET + 0.5)
    assert _check(ctx, t2) == [], "started on 8 of the 12 images ImagesInAcquisition announces"
    sender.series("t2_tse_tra", 4, series_uid=uid, images_in_acquisition=12, first=8)
    sender.age(SERIES_QUIET + 0.5)
    assert len(_check(ctx, t2)) == 1
    (job,) = sender.jobs()
    assert (job.details or {})[SNAPSHOT_KEY]["instance_count"] == 12


def test_late_unrelated_series_do_not_run_the_job_again(ctx: AgentContext, t2: T2First) -> None:
    sender = Sender(ctx)
    sender.series("t2_tse_tra", 12, number=3)
    sender.age(SERIES_QUIET + 0.5)
    assert len(_check(ctx, t2)) == 1
    for number in range(4, 12):  # eight more series that are not an axial T2
        sender.series(f"t1_vibe_tra_{number}", 6, number=number)
    sender.release()
    sender.age(QUIET + 1)
    assert _check(ctx, t2) == [], "a late unrelated series made a new job version"
    assert sender.status() == StudyStatus.COMPLETE
    (job,) = sender.jobs()
    with ctx.sessions() as session:
        messages = session.scalars(
            select(JobEvent.message).where(
                JobEvent.job_id == job.id, JobEvent.kind == EventKind.STATUS
            )
        ).all()
    assert any("T2-first result stands" in m for m in messages), messages


def test_a_late_better_t2_makes_a_new_version(ctx: AgentContext, t2: T2First) -> None:
    sender = Sender(ctx)
    sender.series("t2_tse_tra", 12, number=3)
    sender.age(SERIES_QUIET + 0.5)
    assert len(_check(ctx, t2)) == 1
    better = sender.series("t2_haste_tra", 12, number=5)  # single-shot: the rules prefer it
    sender.release()
    sender.age(QUIET + 1)
    assert len(_check(ctx, t2)) == 1
    first, second = sender.jobs()
    assert second.version == 2
    assert second.previous_job_id == first.id
    assert SNAPSHOT_KEY not in (second.details or {})  # the new version runs on the whole study
    assert first.status == JobStatus.CANCELLED  # still queued: it would run on the old choice
    assert second.instance_count == 24
    assert better != (first.details or {})[SNAPSHOT_KEY]["series_instance_uid"]


def test_more_images_of_the_chosen_series_make_a_new_version(
    ctx: AgentContext, t2: T2First
) -> None:
    sender = Sender(ctx)
    uid = sender.series("t2_tse_tra", 10)
    sender.age(SERIES_QUIET + 0.5)
    assert len(_check(ctx, t2)) == 1
    sender.series("t2_tse_tra", 2, series_uid=uid, first=10)  # the sender paused mid-series
    sender.release()
    sender.age(QUIET + 1)
    assert len(_check(ctx, t2)) == 1
    assert [j.version for j in sender.jobs()] == [1, 2]


def test_turned_off_the_study_waits_for_completion(tmp_path: Path) -> None:
    context = open_context(settings_for(tmp_path, completion={"t2_first": False}))
    try:
        t2 = T2First(context.sessions, context.spool, context.settings.completion)
        sender = Sender(context)
        sender.series("t2_tse_tra", 12)
        sender.age(30)
        assert _check(context, t2) == []
        assert sender.jobs() == []
    finally:
        context.ingestor.close()
        context.engine.dispose()


def test_the_job_reads_only_its_snapshot(ctx: AgentContext, t2: T2First) -> None:
    sender = Sender(ctx)
    sender.series("t2_tse_tra", 12)
    sender.age(SERIES_QUIET + 0.5)
    _check(ctx, t2)
    sender.series("t1_vibe_tra", 5, number=6)
    (job,) = sender.jobs()
    limit = snapshot_limit(job.details)
    assert limit is not None
    with ctx.sessions() as session:
        assert len(queries.instance_paths(session, job.study_id, up_to_instance_id=limit)) == 12
        assert len(queries.instance_paths(session, job.study_id)) == 17
    assert snapshot_limit({"selection": {}}) is None


def test_after_a_restart_series_are_watched_before_they_count(
    ctx: AgentContext, t2: T2First
) -> None:
    sender = Sender(ctx)
    sender.series("t2_tse_tra", 12)
    sender.age(600)  # arrived long before the restart
    assert t2.start_ready_series(utcnow(), watching_since=utcnow()) == []
    earlier = utcnow() - dt.timedelta(seconds=SERIES_QUIET + 0.5)
    assert len(t2.start_ready_series(utcnow(), watching_since=earlier)) == 1
