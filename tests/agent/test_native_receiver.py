"""The native front end's indexer (files closed in ``incoming`` -> the ingest) and settings.

storescp itself runs in tests/integration/test_native_receiver.py; here files are written
into ``incoming`` the way it writes them (open, write, close), so inotify reports them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from agent.context import AgentContext, open_context
from agent.errors import IngestError
from agent.native_receiver import (
    IncomingIndexer,
    incoming_folder,
    rejected_folder,
    storescp_command,
)
from agent.settings import load_settings
from storage.models import Instance
from tests.factory import mr_dataset


def _part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    settings = load_settings(
        None,
        database={"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        spool={"path": tmp_path / "spool", "min_free_mb": 0},
    )
    context = open_context(settings)
    yield context
    context.ingestor.close()
    context.engine.dispose()


def _indexer(ctx: AgentContext, **kwargs: float) -> IncomingIndexer:
    return IncomingIndexer(
        ctx.ingestor,
        incoming_folder(ctx.spool.root),
        rejected_folder(ctx.spool.root),
        threads=2,
        **kwargs,  # type: ignore[arg-type]
    )


def _settle(indexer: IncomingIndexer, handled: int) -> None:
    """Wait until ``handled`` files were taken in or refused and nothing is in flight (a file
    just written is not in flight until its inotify event has been read)."""
    deadline = time.monotonic() + 20
    while indexer.taken + indexer.refused < handled:
        assert time.monotonic() < deadline, f"{indexer.taken} + {indexer.refused} < {handled}"
        time.sleep(0.02)
    assert indexer.wait_idle(20)


def _instances(ctx: AgentContext) -> set[str]:
    with ctx.sessions() as session:
        return set(session.scalars(select(Instance.sop_instance_uid)))


def test_files_closed_in_incoming_are_taken_in_and_removed(ctx: AgentContext) -> None:
    incoming = incoming_folder(ctx.spool.root)
    incoming.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    early = mr_dataset(study_uid=study, series_uid=series, index=1)
    (incoming / "MR.X.early").write_bytes(_part10(early))  # there before the start
    drained: list[int] = []
    indexer = _indexer(ctx)
    indexer.on_drained = lambda: drained.append(1)
    indexer.start()
    try:
        later = [mr_dataset(study_uid=study, series_uid=series, index=n) for n in range(2, 8)]
        for n, ds in enumerate(later):
            (incoming / f"MR.X.{n}").write_bytes(_part10(ds))
        _settle(indexer, 7)
        expected = {str(ds.SOPInstanceUID) for ds in [early, *later]}
        assert _instances(ctx) == expected
        assert [p.name for p in incoming.iterdir() if not p.name.startswith(".")] == []
        spooled = {p.stem for p in ctx.spool.files()}
        assert spooled == expected
        assert indexer.taken == 7
        assert indexer.refused == 0
        assert drained, "the completion check is asked for once the backlog is empty"
    finally:
        indexer.stop()


def test_refused_file_is_kept_with_its_reason(ctx: AgentContext) -> None:
    indexer = _indexer(ctx)
    indexer.start()
    try:
        bad = mr_dataset(study_uid=generate_uid(), series_uid="1.2.840.abc")
        cut = _part10(mr_dataset(study_uid=generate_uid(), series_uid=generate_uid()))[:-100]
        incoming = incoming_folder(ctx.spool.root)
        (incoming / "MR.X.bad").write_bytes(_part10(bad))
        (incoming / "MR.X.cut").write_bytes(cut)
        _settle(indexer, 2)
    finally:
        indexer.stop()
    rejected = rejected_folder(ctx.spool.root)
    assert (rejected / "MR.X.bad").read_bytes() == _part10(bad)
    assert (rejected / "MR.X.bad.reason").read_text().startswith("invalid_uid: ")
    assert (rejected / "MR.X.cut").read_bytes() == cut
    assert (rejected / "MR.X.cut.reason").read_text().startswith("malformed_dataset: ")
    assert not list(incoming_folder(ctx.spool.root).glob("MR.*"))
    assert _instances(ctx) == set()
    assert indexer.refused == 2
    assert ctx.metrics.instances_rejected.labels("dimse", "invalid_uid")._value.get() == 1


def test_file_the_spool_cannot_take_now_stays_and_is_tried_again(ctx: AgentContext) -> None:
    ctx.ingestor.min_free_bytes = 2**62  # "disk full"
    indexer = _indexer(ctx, retry_seconds=0.3)
    indexer.start()
    try:
        ds = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid())
        path = incoming_folder(ctx.spool.root) / "MR.X.1"
        path.write_bytes(_part10(ds))
        full = ctx.metrics.instances_rejected.labels("dimse", "spool_full")
        deadline = time.monotonic() + 20
        while full._value.get() < 2:  # refused, then refused again after retry_seconds
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert indexer.backlog == 1
        assert not indexer.wait_idle(0.1), "it waits for a retry"
        assert path.exists()
        assert _instances(ctx) == set()
        assert not list(rejected_folder(ctx.spool.root).iterdir())
        ctx.ingestor.min_free_bytes = 0  # space again
        _settle(indexer, 1)
        assert _instances(ctx) == {str(ds.SOPInstanceUID)}
        assert not path.exists()
    finally:
        indexer.stop()


def test_a_duplicate_is_acknowledged_and_its_second_copy_removed(ctx: AgentContext) -> None:
    ds = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    indexer = _indexer(ctx)
    indexer.start()
    try:
        incoming = incoming_folder(ctx.spool.root)
        (incoming / "MR.X.a").write_bytes(_part10(ds))
        _settle(indexer, 1)
        (incoming / "MR.X.b").write_bytes(_part10(ds))
        _settle(indexer, 2)
    finally:
        indexer.stop()
    assert _instances(ctx) == {str(ds.SOPInstanceUID)}
    assert not list(incoming.glob("MR.*"))
    assert len(list(ctx.spool.files())) == 1


def test_storescp_command_makes_no_path_from_a_senders_uid(tmp_path: Path) -> None:
    settings = load_settings(
        None, dicom={"port": 11200, "require_called_ae": False, "native": {"enabled": True}}
    )
    command = storescp_command(settings.dicom, tmp_path)
    assert command[0] == "storescp"
    assert "+uf" in command
    assert "--fork" in command
    assert not any(flag in command for flag in ("-su", "-ss", "-sp", "+B"))
    assert command[command.index("-od") + 1] == str(tmp_path)
    assert command[-1] == "11200"
    assert "-xcr" not in command  # no fsync unless asked


def test_storescp_fsync_command_is_quoted_for_the_shell(tmp_path: Path) -> None:
    """With native.fsync storescp runs `sync` on each file (through /bin/sh, synchronously)
    before it answers; a folder name with shell characters stays one word."""
    import subprocess

    settings = load_settings(
        None,
        dicom={"require_called_ae": False, "native": {"enabled": True, "fsync": True}},
    )
    folder = tmp_path / "in coming; $(touch pwned)"
    folder.mkdir()
    command = storescp_command(settings.dicom, folder)
    assert command[command.index("-xcr") + 2] == "-xs"
    script = command[command.index("-xcr") + 1]
    (folder / "MR.X.1").write_bytes(b"data")
    # what storescp runs: #f replaced by its file name, then /bin/sh -c
    run = subprocess.run(
        ["/bin/sh", "-c", script.replace("#f", "MR.X.1")], cwd=tmp_path, capture_output=True
    )
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("dicom", "message"),
    [
        ({}, "require_called_ae"),
        (
            {"require_called_ae": False, "allow_list_enabled": True},
            "allow_list_enabled",
        ),
        (
            {"require_called_ae": False, "port": 104, "native": {"service_port": 104}},
            "service_port",
        ),
    ],
)
def test_settings_refuse_what_storescp_cannot_check(dicom: dict[str, object], message: str) -> None:
    native = {"enabled": True, **dict(dicom.pop("native", {}))}  # type: ignore[call-overload]
    with pytest.raises(ValidationError, match=message):
        load_settings(None, dicom={**dicom, "native": native})
    load_settings(None, dicom={**dicom, "native": {**native, "enabled": False}})


def test_a_batch_records_good_instances_and_answers_each_bad_one_alone(
    ctx: AgentContext, tmp_path: Path
) -> None:
    """store_batch: one multi-row insert when all goes well; a duplicate, a series of another
    study or a malformed data set in the batch fails alone and the others are recorded."""
    study, series = generate_uid(), generate_uid()
    known = mr_dataset(study_uid=study, series_uid=series, index=0)
    ctx.ingestor.store(_part10(known), association_id=None, source_ae=None)
    elsewhere = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid(), index=0)
    ctx.ingestor.store(_part10(elsewhere), association_id=None, source_ae=None)
    good = [mr_dataset(study_uid=study, series_uid=series, index=n) for n in range(1, 5)]
    stolen = mr_dataset(study_uid=study, series_uid=str(elsewhere.SeriesInstanceUID), index=9)
    parts = [_part10(ds) for ds in good]
    files = []
    for n, data in enumerate([parts[0], parts[1], _part10(stolen), parts[2], b"DICM?", parts[3]]):
        path = tmp_path / f"in{n}"
        path.write_bytes(data)
        files.append((data, path))
    files.append((_part10(known), None))  # a duplicate, given as bytes only
    outcomes = ctx.ingestor.store_batch(files, protocol="dimse")
    codes = [o.code if isinstance(o, IngestError) else "ok" for o in outcomes]
    assert codes == ["ok", "ok", "series_in_other_study", "ok", "malformed_dataset", "ok", "ok"]
    last = outcomes[-1]
    assert not isinstance(last, IngestError)
    assert last.duplicate
    expected = {str(ds.SOPInstanceUID) for ds in [known, elsewhere, *good]}
    assert _instances(ctx) == expected
    with ctx.sessions() as session:
        from storage.models import Series

        rows = session.execute(select(Series.series_instance_uid, Series.instance_count))
        counts = {uid: n for uid, n in rows}
    assert counts == {series: 5, str(elsewhere.SeriesInstanceUID): 1}
    # the files were linked into place, byte for byte, and nothing of the refused one is kept
    for ds, data in zip(good, parts, strict=True):
        spooled = ctx.spool.root / study / series / f"{ds.SOPInstanceUID}.dcm"
        assert spooled.read_bytes() == data
    assert not (ctx.spool.root / study / str(elsewhere.SeriesInstanceUID)).exists()
    assert not list(ctx.spool.root.rglob(".tmp-*"))


def test_conflicts_inside_one_batch_fall_back_to_one_by_one(ctx: AgentContext) -> None:
    """Checks before the commit cannot see the batch's own instances: the same instance twice,
    or one new series claimed by two studies, fail the multi-row insert; recorded one by one,
    the second copy is a duplicate, and one study keeps the series while the other's instances
    are refused alone."""
    ds = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    other = mr_dataset(study_uid=str(ds.StudyInstanceUID), series_uid=str(ds.SeriesInstanceUID))
    data = _part10(ds)
    outcomes = ctx.ingestor.store_batch(
        [(data, None), (_part10(other), None), (data, None)], protocol="dimse"
    )
    assert [getattr(o, "duplicate", None) for o in outcomes] == [False, False, True]
    assert _instances(ctx) == {str(ds.SOPInstanceUID), str(other.SOPInstanceUID)}
    assert len(list(ctx.spool.files())) == 2

    series = generate_uid()
    first = mr_dataset(study_uid=generate_uid(), series_uid=series)
    second = mr_dataset(study_uid=generate_uid(), series_uid=series)
    before = _instances(ctx)
    outcomes = ctx.ingestor.store_batch(
        [(_part10(first), None), (_part10(second), None)], protocol="dimse"
    )
    codes = sorted(o.code if isinstance(o, IngestError) else "ok" for o in outcomes)
    assert codes == ["ok", "series_in_other_study"]
    kept = _instances(ctx) - before
    assert kept in ({str(first.SOPInstanceUID)}, {str(second.SOPInstanceUID)})
    assert len(list(ctx.spool.files())) == 3


def test_front_end_says_why_storescp_cannot_start(tmp_path: Path) -> None:
    import socket

    from agent.errors import AgentError
    from agent.native_receiver import StorescpFrontEnd

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # storescp binds every address too
        taken.listen()
        port = taken.getsockname()[1]
        settings = load_settings(
            None, dicom={"port": port, "require_called_ae": False, "native": {"enabled": True}}
        )
        front = StorescpFrontEnd(settings.dicom, tmp_path / "incoming")
        with pytest.raises(AgentError) as failed:
            front.start()
        assert failed.value.code == "storescp_failed"
        assert "exited with status" in failed.value.message
    assert not front.running
    assert not (tmp_path / "incoming" / ".storescp.pid").exists()
    missing = load_settings(
        None,
        dicom={
            "require_called_ae": False,
            "native": {"enabled": True, "storescp": str(tmp_path / "no-such-storescp")},
        },
    )
    with pytest.raises(AgentError) as absent:
        StorescpFrontEnd(missing.dicom, tmp_path / "incoming").start()
    assert absent.value.code == "storescp_missing"
    assert "dcmtk" in absent.value.message


def test_front_end_stops_while_the_spool_is_low_on_disk(tmp_path: Path) -> None:
    """Below spool.min_free_mb storescp is stopped (associations refused, as the agent's own
    SCP answers 0xA700 there); with room again it listens again."""
    import socket
    import subprocess

    from agent.native_receiver import StorescpFrontEnd
    from tests.integration.processes import ECHOSCU, dcmtk_env, free_port

    port = free_port()
    settings = load_settings(
        None, dicom={"port": port, "require_called_ae": False, "native": {"enabled": True}}
    )
    free = [2**40]
    paused: list[bool] = []
    front = StorescpFrontEnd(
        settings.dicom,
        tmp_path / "incoming",
        min_free_bytes=2**30,
        free_bytes=lambda: free[0],
        on_paused=paused.append,
        check_seconds=0.05,
    )

    def echo() -> bool:
        run = subprocess.run(
            [ECHOSCU, "-to", "5", "-aec", "LIVERAI", "127.0.0.1", str(port)],
            capture_output=True,
            env=dcmtk_env(),
            timeout=30,
        )
        return run.returncode == 0

    def until(condition: object, what: str) -> None:
        deadline = time.monotonic() + 20
        while not condition():  # type: ignore[operator]
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    front.start()
    try:
        assert echo()
        free[0] = 2**30 - 1  # below the minimum
        until(lambda: front.paused, "storescp to stop")
        assert paused == [True]
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", port))
        free[0] = 2**30 + 2**20  # above the minimum, not above the margin: still stopped
        time.sleep(0.5)
        assert front.paused
        free[0] = 2**31
        until(lambda: not front.paused, "storescp to start again")
        assert paused == [True, False]
        until(echo, "storescp to answer again")
    finally:
        front.stop()
    assert not front.running


def test_receivers_sharing_a_spool_need_an_incoming_folder_each(tmp_path: Path) -> None:
    dicom = {"require_called_ae": False, "native": {"enabled": True}}
    with pytest.raises(ValidationError, match=r"dicom\.native\.incoming"):
        load_settings(None, dicom=dicom, cluster={"role": "receiver"})
    with pytest.raises(ValidationError, match=r"dicom\.native\.incoming"):
        load_settings(None, dicom=dicom, database={"url": "postgresql+psycopg://u@h/db"})
    own = {**dicom, "native": {"enabled": True, "incoming": str(tmp_path / "in-a")}}
    settings = load_settings(None, dicom=own, cluster={"role": "receiver"})
    assert incoming_folder(tmp_path, settings.dicom.native.incoming) == tmp_path / "in-a"
    assert incoming_folder(tmp_path) == tmp_path / "incoming"
    load_settings(None, dicom=dicom)  # one agent on SQLite: <spool>/incoming


def test_route_by_sender_needs_the_sender_named(tmp_path: Path) -> None:
    """storescp does not pass the calling AE title on: with destinations that send results
    back to the sender, native.source_ae must name it."""
    destination = {"name": "pacs", "ae_title": "PACS", "host": "10.0.0.5", "port": 104}
    dicom = {"require_called_ae": False, "native": {"enabled": True}}
    with pytest.raises(ValidationError, match=r"source_ae must name the PACS.*: pacs"):
        load_settings(None, dicom=dicom, destinations=[destination])
    named = {**dicom, "native": {"enabled": True, "source_ae": "PACS"}}
    assert load_settings(None, dicom=named, destinations=[destination]).dicom.native.source_ae
    always = {**destination, "route": "always"}
    load_settings(None, dicom=dicom, destinations=[always])


def test_indexer_records_the_named_sender(ctx: AgentContext) -> None:
    indexer = IncomingIndexer(
        ctx.ingestor,
        incoming_folder(ctx.spool.root),
        rejected_folder(ctx.spool.root),
        source_ae="MAINPACS",
    )
    indexer.start()
    try:
        ds = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid())
        (incoming_folder(ctx.spool.root) / "MR.X.1").write_bytes(_part10(ds))
        _settle(indexer, 1)
    finally:
        indexer.stop()
    from storage.models import Study

    with ctx.sessions() as session:
        assert session.scalars(select(Study.source_ae)).one() == "MAINPACS"


def test_refused_files_are_deleted_after_the_spool_retention(tmp_path: Path) -> None:
    import os

    from agent.retention import clean_rejected

    folder = tmp_path / "rejected"
    folder.mkdir()
    now = time.time()
    for name, age_days in (("MR.X.old", 3.0), ("MR.X.new", 0.5)):
        (folder / name).write_bytes(b"acknowledged, refused")
        (folder / f"{name}.reason").write_text("invalid_uid: ...\n")
        os.utime(folder / name, (now - age_days * 86400, now - age_days * 86400))
    assert clean_rejected(folder, 1.0, now=now) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["MR.X.new", "MR.X.new.reason"]
    assert clean_rejected(tmp_path / "missing", 1.0) == 0


def test_source_ae_is_checked_like_every_ae_title() -> None:
    dicom = {"require_called_ae": False, "native": {"enabled": True, "source_ae": "BAD\\AE"}}
    with pytest.raises(ValidationError, match="not a valid AE title"):
        load_settings(None, dicom=dicom)
