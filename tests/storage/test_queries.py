"""Ingest and completion queries: instances, study completion, and job version links."""

from __future__ import annotations

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from storage import jobs, queries
from storage.models import Job, JobStatus, StudyStatus
from storage.queries import InstanceRecord


def record(session: Session, study: str, series: str) -> str:
    uid = generate_uid()
    queries.record_instance(
        session,
        InstanceRecord(
            study_instance_uid=study,
            series_instance_uid=series,
            sop_instance_uid=uid,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            path=f"{study}/{series}/{uid}.dcm",
            size_bytes=100,
        ),
        association_id=None,
        source_ae="PACS",
    )
    return uid


def test_more_instances_after_completion_make_a_linked_new_version(
    sessions: sessionmaker[Session],
) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    with sessions.begin() as session:
        first_uid = record(session, study_uid, series_uid)
        record(session, study_uid, series_uid)
        study_id = queries.study_id_of(session, study_uid)
        assert study_id is not None
        first = queries.complete_study(session, study_id, rule="test")
        assert first is not None
        assert (first.version, first.previous_job_id, first.instance_count) == (1, None, 2)
        assert queries.complete_study(session, study_id, rule="test") is None  # already complete
    with sessions.begin() as session:
        record(session, study_uid, series_uid)
        study = session.get_one(Job, first.id).study
        assert study.status == StudyStatus.RECEIVING  # open again: it will complete again
        second = queries.complete_study(session, study_id, rule="test")
        assert second is not None
        assert (second.version, second.previous_job_id, second.instance_count) == (2, first.id, 3)
    with sessions() as session:
        assert jobs.next_version_id(session, first.id) == second.id
        assert jobs.next_version_id(session, second.id) is None
        assert queries.latest_job_id(session, study_id) == second.id
        assert queries.series_count(session, study_id) == 1
        assert queries.spool_bytes(session) == 300
        assert queries.instance_file(session, first_uid) == (
            f"{study_uid}/{series_uid}/{first_uid}.dcm",
            100,
        )
        assert len(queries.instance_paths(session, study_id)) == 3
        # completing does not decide the previous version's fate: the lifecycle does
        assert session.get_one(Job, first.id).status == JobStatus.QUEUED


def _record(study: str, series: str, uid: str | None = None) -> InstanceRecord:
    uid = uid or generate_uid()
    return InstanceRecord(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=uid,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        path=f"{study}/{series}/{uid}.dcm",
        size_bytes=100,
        series_number=3,
    )


def _counts(session: Session, study: str) -> tuple[int, list[int], StudyStatus, str | None]:
    from sqlalchemy import select

    from storage.models import Series, Study

    row = session.execute(select(Study).where(Study.study_instance_uid == study)).scalar_one()
    series = sorted(
        s.instance_count for s in session.scalars(select(Series).where(Series.study_id == row.id))
    )
    return row.instance_count, series, StudyStatus(row.status), row.source_ae


def test_batched_recording_gives_the_rows_of_one_by_one(sessions: sessionmaker[Session]) -> None:
    import pytest
    from sqlalchemy.exc import IntegrityError

    one, many = generate_uid(), generate_uid()
    a, b, c, d = (generate_uid() for _ in range(4))
    layout = [(a, 3), (b, 2)]
    with sessions.begin() as session:
        for series, n in layout:
            for _ in range(n):
                queries.record_instance(
                    session, _record(one, series), association_id=None, source_ae="PACS"
                )
        records = [_record(many, s) for s, n in [(c, 3), (d, 2)] for _ in range(n)]
        queries.record_instances(session, records, association_id=None, source_ae="PACS")
        assert (
            _counts(session, one)
            == _counts(session, many)
            == (
                5,
                [2, 3],
                StudyStatus.RECEIVING,
                "PACS",
            )
        )
        # more of a known series later: counts go on from there
        queries.record_instances(
            session, [_record(many, c), _record(many, c)], association_id=None, source_ae=None
        )
        assert _counts(session, many)[:2] == (7, [2, 5])
    # all or nothing: a known SOP Instance UID, or a series of another study, fails the batch
    with sessions() as session:
        known = records[0].sop_instance_uid
        with pytest.raises(IntegrityError), session.begin_nested():
            queries.record_instances(
                session,
                [_record(many, c), _record(many, c, uid=known)],
                association_id=None,
                source_ae=None,
            )
        with pytest.raises(queries.SeriesInOtherStudyError), session.begin_nested():
            queries.record_instances(
                session, [_record(generate_uid(), c)], association_id=None, source_ae=None
            )
        assert _counts(session, many)[:2] == (7, [2, 5])


def test_known_files_and_series_of_a_batch(sessions: sessionmaker[Session]) -> None:
    study, series, other_series = generate_uid(), generate_uid(), generate_uid()
    with sessions.begin() as session:
        first = record(session, study, series)
    with sessions() as session:
        files, owners = queries.known_files_and_series(
            session, [first, generate_uid(), first], [series, other_series]
        )
    assert files == {first: (f"{study}/{series}/{first}.dcm", 100)}
    assert owners == {series: study}


def test_lock_studies_holds_each_study_lock_until_the_transaction_ends(
    sessions: sessionmaker[Session],
) -> None:
    """On PostgreSQL the batch's study locks are held, in order, until the transaction ends:
    another connection cannot take one meanwhile (nothing happens on SQLite)."""
    from sqlalchemy import text

    from storage.locks import lock_key

    uids = [generate_uid() for _ in range(3)]
    with sessions.begin() as session:
        queries.lock_studies(session, reversed(uids))
        if session.get_bind().dialect.name == "sqlite":
            return
        with sessions() as other:
            for uid in uids:
                taken = other.scalar(
                    text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(f"study:{uid}")}
                )
                assert taken is False, uid
            other.rollback()
