"""The ingest path shared by C-STORE and STOW-RS: validation, durability, failure statuses."""

from __future__ import annotations

import errno
import threading
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from agent.context import AgentContext, open_context
from agent.dicom_status import StoreStatus
from agent.errors import IngestError
from agent.settings import load_settings
from storage import queries
from storage.models import AssociationStatus, Instance, Study
from tests.factory import mr_dataset


def _part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def ctx(tmp_path: Path) -> AgentContext:
    settings = load_settings(
        None,
        database={"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        spool={"path": tmp_path / "spool", "min_free_mb": 0},
    )
    context = open_context(settings)
    yield context
    context.ingestor.close()
    context.engine.dispose()


def _count(ctx: AgentContext, model: type) -> int:
    with ctx.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_stored_instance_is_in_spool_and_database(ctx: AgentContext) -> None:
    ds = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    data = _part10(ds)
    assoc = ctx.ingestor.begin(
        calling_ae="PACS", called_ae="LIVERAI", peer_host="::1", protocol="dimse"
    )
    received = ctx.ingestor.store(data, association_id=assoc, source_ae="PACS")
    assert not received.duplicate
    path = ctx.spool.root / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert path.read_bytes() == data
    assert not list(ctx.spool.root.rglob(".tmp-*"))
    with ctx.sessions() as session:
        study = session.scalars(select(Study)).one()
        assert study.source_ae == "PACS"
        assert study.instance_count == 1
        assert study.accession_number == "ACC0001"


def test_duplicate_is_acknowledged_without_a_second_row(ctx: AgentContext) -> None:
    data = _part10(mr_dataset(study_uid=generate_uid(), series_uid=generate_uid()))
    ctx.ingestor.store(data, association_id=None, source_ae="PACS")
    again = ctx.ingestor.store(data, association_id=None, source_ae="PACS")
    assert again.duplicate
    assert _count(ctx, Instance) == 1
    assert ctx.metrics.instances_duplicate.labels("dimse")._value.get() == 1


def test_recorded_instance_whose_file_vanished_is_written_again(ctx: AgentContext) -> None:
    ds = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    data = _part10(ds)
    ctx.ingestor.store(data, association_id=None, source_ae="PACS")
    (path,) = ctx.spool.root.rglob("*.dcm")
    path.unlink()
    received = ctx.ingestor.store(data, association_id=None, source_ae="PACS")
    assert received.duplicate  # the row existed; the file is back
    assert path.read_bytes() == data
    assert _count(ctx, Instance) == 1


@pytest.mark.parametrize(
    ("expected_class", "expected_instance", "code"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", None, "sop_class_mismatch"),
        (None, "1.2.3.4", "sop_instance_mismatch"),
    ],
)
def test_data_set_that_differs_from_the_request_gets_a900(
    ctx: AgentContext, expected_class: str | None, expected_instance: str | None, code: str
) -> None:
    data = _part10(mr_dataset(study_uid=generate_uid(), series_uid=generate_uid()))
    with pytest.raises(IngestError) as caught:
        ctx.ingestor.store(
            data,
            association_id=None,
            source_ae="PACS",
            expected_sop_class_uid=expected_class,
            expected_sop_instance_uid=expected_instance,
        )
    assert caught.value.status == StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert caught.value.code == code
    assert _count(ctx, Instance) == 0


def test_full_disk_is_refused_with_out_of_resources(
    ctx: AgentContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ctx.spool, "stage", no_space)
    data = _part10(mr_dataset(study_uid=generate_uid(), series_uid=generate_uid()))
    with pytest.raises(IngestError) as caught:
        ctx.ingestor.store(data, association_id=None, source_ae="PACS")
    assert caught.value.status == StoreStatus.OUT_OF_RESOURCES
    assert caught.value.code == "spool_write_failed"


def test_low_free_space_threshold_refuses_before_writing(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        database={"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        spool={"path": tmp_path / "spool", "min_free_mb": 10**9},
    )
    context = open_context(settings)
    data = _part10(mr_dataset(study_uid=generate_uid(), series_uid=generate_uid()))
    with pytest.raises(IngestError) as caught:
        context.ingestor.store(data, association_id=None, source_ae="PACS")
    assert caught.value.code == "spool_full"
    assert caught.value.status == StoreStatus.OUT_OF_RESOURCES
    assert not list(context.spool.root.rglob("*.dcm"))


def test_database_failure_is_refused_with_out_of_resources(
    ctx: AgentContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(*args: object, **kwargs: object) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(queries, "record_instance", locked)
    data = _part10(mr_dataset(study_uid=generate_uid(), series_uid=generate_uid()))
    with pytest.raises(IngestError) as caught:
        ctx.ingestor.store(data, association_id=None, source_ae="PACS")
    assert caught.value.status == StoreStatus.OUT_OF_RESOURCES
    assert caught.value.code == "database_error"
    assert list(ctx.spool.root.rglob("*.dcm")) == [], "a refused instance left its file"
    # the PACS retries later and then it is stored
    monkeypatch.undo()
    assert not ctx.ingestor.store(data, association_id=None, source_ae="PACS").duplicate
    assert _count(ctx, Instance) == 1


def test_concurrent_associations_share_flushes(
    ctx: AgentContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    barriers = 0
    real_barrier = ctx.spool.barrier

    def counting_barrier(*args: object) -> None:
        nonlocal barriers
        barriers += 1
        real_barrier(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ctx.spool, "barrier", counting_barrier)
    study = generate_uid()
    blobs = [
        [_part10(mr_dataset(study_uid=study, series_uid=series, index=i)) for i in range(25)]
        for series in (generate_uid() for _ in range(4))
    ]
    errors: list[BaseException] = []

    def send(items: list[bytes]) -> None:
        assoc = ctx.ingestor.begin(
            calling_ae="PACS", called_ae="LIVERAI", peer_host="127.0.0.1", protocol="dimse"
        )
        try:
            for data in items:
                ctx.ingestor.store(data, association_id=assoc, source_ae="PACS")
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
        ctx.ingestor.end(assoc, AssociationStatus.RELEASED)

    threads = [threading.Thread(target=send, args=(items,)) for items in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _count(ctx, Instance) == 100
    assert barriers < 100, "group commit should flush several instances at once"
    with ctx.sessions() as session:
        assert session.scalars(select(Study.instance_count)).one() == 100


def test_a_bug_in_the_commit_refuses_the_batch_and_the_next_one_succeeds(
    ctx: AgentContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(ctx.spool, "barrier", broken)
    data = _part10(mr_dataset(study_uid=generate_uid(), series_uid=generate_uid()))
    with pytest.raises(IngestError) as caught:
        ctx.ingestor.store(data, association_id=None, source_ae="PACS")
    assert caught.value.status == StoreStatus.OUT_OF_RESOURCES
    assert caught.value.code == "internal_error"
    monkeypatch.undo()
    other = _part10(mr_dataset(study_uid=generate_uid(), series_uid=generate_uid()))
    assert not ctx.ingestor.store(other, association_id=None, source_ae="PACS").duplicate


def test_reused_series_uid_in_a_batch_fails_alone(
    ctx: AgentContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the early check cannot see: the bad instance is in the same group commit as
    good ones. It alone is refused (0xC000, no file); the others are stored."""
    series = generate_uid()
    ctx.ingestor.store(
        _part10(mr_dataset(study_uid=generate_uid(), series_uid=series)),
        association_id=None,
        source_ae="PACS",
    )
    # as if the other study's instance were recorded between the early check and the commit
    monkeypatch.setattr(queries, "study_of_series", lambda *args: None)
    release = threading.Event()
    real_barrier = ctx.spool.barrier

    def held_barrier(*args: object) -> None:
        release.wait(10)
        real_barrier(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ctx.spool, "barrier", held_barrier)
    good_study = generate_uid()
    good = [
        _part10(mr_dataset(study_uid=good_study, series_uid=generate_uid(), index=i))
        for i in range(6)
    ]
    bad = _part10(mr_dataset(study_uid=generate_uid(), series_uid=series))
    outcome: dict[int, BaseException | None] = {}

    def send(n: int, data: bytes) -> None:
        try:
            ctx.ingestor.store(data, association_id=None, source_ae="PACS")
            outcome[n] = None
        except IngestError as err:
            outcome[n] = err

    first = threading.Thread(target=send, args=(0, good[0]))
    first.start()  # leads the first batch and waits in the barrier
    others = [
        threading.Thread(target=send, args=(n, data))
        for n, data in enumerate([*good[1:], bad], start=1)
    ]
    for t in others:
        t.start()
    deadline = threading.Event()
    for _ in range(200):  # until every other instance waits in the next batch
        if len(ctx.ingestor._queue) == len(others):
            break
        deadline.wait(0.02)
    assert len(ctx.ingestor._queue) == len(others)
    release.set()
    for t in [first, *others]:
        t.join(20)
    refused = {n: err for n, err in outcome.items() if err is not None}
    assert list(refused) == [len(good)], refused
    err = refused[len(good)]
    assert isinstance(err, IngestError)
    assert err.code == "series_in_other_study"
    assert err.status == StoreStatus.CANNOT_UNDERSTAND
    assert _count(ctx, Instance) == 1 + len(good)
    files = {p.relative_to(ctx.spool.root).as_posix() for p in ctx.spool.root.rglob("*.dcm")}
    with ctx.sessions() as session:
        assert files == set(session.scalars(select(Instance.path)))
