"""The bad-input corpus against a running agent: each input gets the DICOM status it should,
nothing acknowledged is lost, the agent stays up, nothing is written outside its spool, and
every study it accepted ends in a final job."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import MRImageStorage, generate_uid

from tests.factory import mr_dataset
from tests.hostile.helpers import (
    alive,
    db_count,
    files_under,
    outside_spool,
    raw_file,
    send,
    stored,
)
from tests.hostile.ledger import Ledger
from tests.integration.processes import UNDER_WAY
from tests.integration.truth_agent import TruthAgentProcess

pytestmark = [pytest.mark.hostile, pytest.mark.integration, pytest.mark.slow]

SUCCESS, CANNOT_UNDERSTAND, DATA_MISMATCH = 0x0000, 0xC000, 0xA900
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def _good(study: str | None = None, series: str | None = None, index: int = 0) -> Dataset:
    return mr_dataset(
        study_uid=study or generate_uid(), series_uid=series or generate_uid(), index=index
    )


def _encode(ds: Dataset) -> bytes:
    """The data set (no file meta) in Explicit VR Little Endian, as it goes on the wire."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, Dataset({tag: ds[tag] for tag in ds.keys()}))  # noqa: SIM118
    return fp.getvalue()


@dataclass
class Case:
    """One input: how to make it, which statuses count as handled, which UID it stores."""

    input: str
    make: Callable[[Path], Dataset | Path]
    expected: frozenset[int]
    keeps: str | None = None  # the SOP Instance UID that must be stored when acknowledged
    study: str | None = None  # a study that must end in a final job when acknowledged


def _truncated(cut: Callable[[int], int]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        ds = _good()
        encoded = _encode(ds)
        return raw_file(
            folder, MRImageStorage, encoded[: cut(len(encoded))], str(ds.SOPInstanceUID)
        )

    return make


def _mismatched(folder: Path) -> Path:
    return raw_file(folder, MRImageStorage, _encode(_good()))  # meta names another instance


def _without(keyword: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        ds = _good()
        uid = str(ds.SOPInstanceUID)
        delattr(ds, keyword)
        return raw_file(folder, MRImageStorage, _encode(ds), sop_uid=uid)

    return make


def _uid(keyword: str, value: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        ds = _good()
        setattr(ds, keyword, value)
        sop = value if keyword == "SOPInstanceUID" else str(ds.SOPInstanceUID)
        return raw_file(folder, MRImageStorage, _encode(ds), sop_uid=sop)

    return make


def _huge_element(size: int) -> Callable[[Path], Dataset]:
    def make(_: Path) -> Dataset:
        ds = _good()
        block = ds.private_block(0x0011, "HOSTILE TEST", create=True)
        block.add_new(0x01, "OB", b"\x5a" * size)
        return ds

    return make


def _huge_length(folder: Path) -> Path:
    ds = _good()
    uid = str(ds.SOPInstanceUID)
    encoded = _encode(ds)
    # a private OB element that claims 0xFFFFFFF0 bytes and brings 16
    bogus = b"\x11\x00\x10\x10OB\x00\x00" + (0xFFFFFFF0).to_bytes(4, "little") + b"\x00" * 16
    return raw_file(folder, MRImageStorage, encoded.split(b"\xe0\x7f\x10\x00")[0] + bogus, uid)


def _deep(levels: int) -> Callable[[Path], Dataset]:
    def make(_: Path) -> Dataset:
        ds = _good()
        inner = Dataset()
        inner.CodeMeaning = "bottom"
        for _level in range(levels):
            outer = Dataset()
            outer.ContentSequence = [inner]
            inner = outer
        ds.ContentSequence = inner.ContentSequence
        return ds

    return make


def _ct(_: Path) -> Dataset:
    ds = _good()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.Modality = "CT"
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    return ds


def _enhanced(_: Path) -> Dataset:
    ds = _good()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    frames = 4
    ds.NumberOfFrames = frames
    rows, cols = int(ds.Rows), int(ds.Columns)
    ds.PixelData = np.zeros((frames, rows, cols), dtype=np.uint16).tobytes()
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for n in range(frames):
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [-100, -100, 6.0 * n]
        item.PlanePositionSequence = [position]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient"):
        delattr(ds, keyword)
    return ds


def _cases() -> list[Case]:
    fail = frozenset({CANNOT_UNDERSTAND})
    ok = frozenset({SUCCESS})
    return [
        Case("truncated file (half the data set)", _truncated(lambda n: n // 2), fail),
        Case("truncated inside an element header", _truncated(lambda _n: 37), fail),
        Case("truncated pixel data (last 100 bytes cut)", _truncated(lambda n: n - 100), fail),
        Case("mismatched SOP Instance UID (meta vs data)", _mismatched, frozenset({DATA_MISMATCH})),
        Case("missing Study Instance UID", _without("StudyInstanceUID"), fail),
        Case("missing Series Instance UID", _without("SeriesInstanceUID"), fail),
        Case("traversal SOP UID ../../x", _uid("SOPInstanceUID", "../../x"), fail),
        Case(
            "traversal series UID 1.2.3/../../../etc",
            _uid("SeriesInstanceUID", "1.2.3/../../../etc"),
            fail,
        ),
        Case("over-long study UID (72 chars)", _uid("StudyInstanceUID", "1.2." + "3" * 68), fail),
        Case("UID with a leading-zero component", _uid("StudyInstanceUID", "1.2.03"), fail),
        Case("element claiming 4 GB", _huge_length, fail),
        Case("huge element (16 MB private OB)", _huge_element(16 * 1024 * 1024), ok),
        Case("deep sequence (200 levels)", _deep(200), frozenset({SUCCESS, CANNOT_UNDERSTAND})),
        Case("non-MR (CT image)", _ct, ok),
        Case("enhanced MR multi-frame", _enhanced, ok),
    ]


def _uids(item: Dataset | Path) -> tuple[str | None, str | None]:
    if isinstance(item, Path):
        return None, None  # raw inputs are never meant to be stored
    return str(item.SOPInstanceUID), str(item.StudyInstanceUID)


def _final_job(agent: TruthAgentProcess, study: str) -> bool:
    jobs = agent.api("/api/jobs", study_instance_uid=study)["jobs"]
    return bool(jobs) and jobs[0]["status"] not in UNDER_WAY


def test_bad_input_corpus(shared_agent: TruthAgentProcess, ledger: Ledger, tmp_path: Path) -> None:
    agent = shared_agent
    before = files_under(agent.workdir)
    accepted_studies: list[tuple[str, str]] = []  # (row input, study UID)
    rows = {}
    for case in _cases():
        row = ledger.row("bad input", case.input, note=f"status in {sorted(case.expected)}")
        rows[case.input] = row
        item = case.make(tmp_path / "inputs")
        status = send(agent.port, item, chunked=isinstance(item, Path))
        row.tried += 1
        sop, study = _uids(item)
        if status in case.expected:
            row.handled += 1
        else:
            row.note += f"; got {status if status is None else hex(status)}"
        if status == SUCCESS and sop is not None and study is not None:
            if not stored(agent, sop):
                row.lost += 1
            accepted_studies.append((case.input, study))
        row.crashed = not alive(agent)

    # duplicates: the same instance twice is stored once and acknowledged both times
    row = ledger.row("bad input", "duplicate instance (sent twice)", note="0x0000 twice, one row")
    dup = _good()
    statuses = [send(agent.port, dup), send(agent.port, dup)]
    row.tried = 2
    row.handled = sum(1 for s in statuses if s == SUCCESS)
    if (
        db_count(
            agent,
            "select count(*) from instances where sop_instance_uid = ?",
            str(dup.SOPInstanceUID),
        )
        != 1
    ):
        row.lost += 1
    accepted_studies.append((row.input, str(dup.StudyInstanceUID)))

    # a series UID reused in another study fails alone while good senders send at once
    row = ledger.row(
        "bad input",
        "reused series UID amid 3 good senders",
        note="0xC000 alone; every good one 0x0000 and stored",
    )
    first = _good()
    assert send(agent.port, first) == SUCCESS
    study = generate_uid()
    series = [generate_uid() for _ in range(3)]
    good = [_good(study, series[n % 3], index=n) for n in range(3 * 5)]
    results: dict[str, int | None] = {}

    def sender(batch: list[Dataset]) -> None:
        for ds in batch:
            results[str(ds.SOPInstanceUID)] = send(agent.port, ds)

    threads = [threading.Thread(target=sender, args=(good[n::3],)) for n in range(3)]
    for thread in threads:
        thread.start()
    thief = _good(series=str(first.SeriesInstanceUID))
    bad_status = send(agent.port, thief)
    for thread in threads:
        thread.join(120)
    row.tried = 1 + len(good)
    row.handled = int(bad_status == CANNOT_UNDERSTAND) + sum(
        1 for ds in good if results.get(str(ds.SOPInstanceUID)) == SUCCESS
    )
    row.lost = sum(1 for ds in good if not stored(agent, str(ds.SOPInstanceUID)))
    row.lost += int(stored(agent, str(thief.SOPInstanceUID)))  # kept against the rule
    row.crashed = not alive(agent)

    # every accepted study ends in a final job (not evaluated is fine: the agent said why)
    deadline = time.monotonic() + 120
    pending = {study for _, study in accepted_studies}
    while pending and time.monotonic() < deadline:
        pending = {s for s in pending if not _final_job(agent, s)}
        time.sleep(0.5)
    jobs_row = ledger.row(
        "bad input",
        "accepted odd studies end in a final job",
        note="done / not_evaluated, none stuck",
    )
    jobs_row.tried = len({s for _, s in accepted_studies})
    jobs_row.handled = jobs_row.tried - len(pending)
    jobs_row.lost = len(pending)
    jobs_row.crashed = not alive(agent)
    outside = outside_spool(agent, files_under(agent.workdir) - before)
    jobs_row.outside = outside
    assert not ledger.failing(), "\n".join(ledger.table())
