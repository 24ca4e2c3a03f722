"""What the hostile rows share: sending as a careless or hostile client would, and checking
what the agent kept and where."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

from tests.integration.processes import ECHOSCU, AgentProcess, dcmtk_env

#: how long the shared agent waits for an unfinished association negotiation (s)
ACSE_TIMEOUT = 2.0
MAX_ASSOCIATIONS = 4


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def outside_spool(agent: AgentProcess, new_files: set[Path]) -> list[str]:
    """New files in the agent's folder that are not its own: spool, results, database, token,
    log, settings (anything else it wrote is a file outside the spool)."""
    var = agent.workdir / "var"
    allowed = (var / "spool", var / "results")
    own = {agent.log_path, agent.config_path, var / "http-token"}
    out = []
    for path in new_files:
        if path in own or any(path.is_relative_to(a) for a in allowed):
            continue
        if path.parent == var and path.name.startswith("liver-agent.db"):
            continue
        out.append(str(path))
    return sorted(out)


def db_count(agent: AgentProcess, sql: str, *args: object) -> int:
    try:
        with sqlite3.connect(agent.db_path, timeout=10) as conn:
            return int(conn.execute(sql, args).fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not migrated yet


def stored(agent: AgentProcess, sop_uid: str, spool: Path | None = None) -> bool:
    """The instance has its row and its file in the spool (``spool``: when not the agent's
    default ``var/spool``)."""
    with sqlite3.connect(agent.db_path, timeout=10) as conn:
        row = conn.execute(
            "select path from instances where sop_instance_uid = ?", (sop_uid,)
        ).fetchone()
    return row is not None and ((spool or agent.spool) / row[0]).is_file()


def alive(agent: AgentProcess) -> bool:
    return agent.proc is not None and agent.proc.poll() is None


def echo(port: int, timeout: int = 5) -> bool:
    done = subprocess.run(
        [
            ECHOSCU,
            "-aec",
            "LIVERAI",
            "-to",
            str(timeout),
            "-ta",
            str(timeout),
            "127.0.0.1",
            str(port),
        ],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        timeout=60,
        check=False,
    )
    return done.returncode == 0


def send(port: int, item: Dataset | Path, *, chunked: bool = False) -> int | None:
    """C-STORE one data set or file over its own association (tried again, as a PACS would,
    while the association limit refuses it); the response status, or None when there was no
    response (association refused every time, or aborted)."""
    from pydicom import dcmread

    sop_class = (
        str(item.SOPClassUID)
        if isinstance(item, Dataset)
        else str(dcmread(item, stop_before_pixels=True).file_meta.MediaStorageSOPClassUID)
    )
    ae = AE(ae_title="HOSTILE")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
    for attempt in range(4):  # a PACS tries again when the association limit is reached
        assoc = ae.associate("127.0.0.1", port, ae_title="LIVERAI")
        if assoc.is_established:
            break
        time.sleep(0.3 * (attempt + 1))
    else:
        return None
    _config.STORE_SEND_CHUNKED_DATASET = chunked
    try:
        status = assoc.send_c_store(item)
        code = getattr(status, "Status", None)
        return None if code is None else int(code)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        if assoc.is_established:
            assoc.release()


def raw_file(folder: Path, sop_class: str, encoded: bytes, sop_uid: str | None = None) -> Path:
    """A Part 10 file whose data set is ``encoded`` byte for byte (sent chunked, not
    re-encoded); its meta names ``sop_uid`` (fresh if None) as the instance."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"raw-{len(list(folder.iterdir()))}.dcm"
    path.write_bytes(buffer.getvalue() + encoded)
    return path
