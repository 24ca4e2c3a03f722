"""Bad input gets a DICOM failure status; nothing is written outside the spool."""

from __future__ import annotations

import sqlite3
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, _config

from tests.factory import mr_dataset
from tests.integration.processes import running_agent, storescu

pytestmark = pytest.mark.integration


def _all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _send(port: int, ds_or_path: Dataset | Path) -> int:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="LIVERAI")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds_or_path)
        return int(status.Status)
    finally:
        assoc.release()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("SOPInstanceUID", "../../x"),
        ("SeriesInstanceUID", "1.2.3/../../../etc"),
        ("StudyInstanceUID", "1.2." + "3" * 70),
        ("StudyInstanceUID", "1.2.03"),  # leading zero: not a valid UID component
    ],
)
def test_uid_injection_is_refused_and_writes_nothing(
    tmp_path: Path, field: str, value: str
) -> None:
    ds = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    setattr(ds, field, value)
    if field == "SOPInstanceUID":
        ds.file_meta.MediaStorageSOPInstanceUID = value
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad, enforce_file_format=False)
    workdir = tmp_path / "agent"
    with running_agent(workdir, worker={"threads": 0}) as agent:
        before = _all_files(tmp_path)
        sent = storescu(agent.port, [bad])
        output = sent.stdout + sent.stderr
        assert "Received Store Response (Success)" not in output
        assert "Received Store Response (Error: CannotUnderstand)" in output, output
        after = _all_files(tmp_path)
        new = {p for p in after - before if p.suffix == ".dcm" or "spool" in str(p)}
        assert new == set(), new
        with sqlite3.connect(agent.db_path) as conn:
            assert conn.execute("select count(*) from instances").fetchone()[0] == 0
        assert "invalid_uid" in agent.log()


def _send_raw(port: int, encoded: bytes, tmp_path: Path) -> int:
    """C-STORE a file whose data set is the given bytes, sent as they are (not re-encoded)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "raw.dcm"
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    path.write_bytes(buffer.getvalue() + encoded)
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        return _send(port, path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False


def test_malformed_dataset_gets_failure_status(tmp_path: Path) -> None:
    # an element whose length runs past the end of the data
    garbage = b"\x08\x00\x16\x00UI\x40\x00" + b"1.2.3" + b"\x10\x00\x10\x00PN\xff\x7f" + b"x" * 8
    missing_uids = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    del missing_uids.StudyInstanceUID
    with running_agent(tmp_path / "agent", worker={"threads": 0}) as agent:
        assert _send_raw(agent.port, garbage, tmp_path) == 0xC000
        assert _send(agent.port, missing_uids) == 0xC000
        # the agent still works after it
        ok = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid())
        assert _send(agent.port, ok) == 0x0000
        assert agent.log().count("refused instance") == 2
        assert list(agent.spool.rglob("*.dcm")) != []
