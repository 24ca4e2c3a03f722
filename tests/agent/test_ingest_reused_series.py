"""A Series Instance UID reused in another study fails alone: 0xC000 with a comment, no orphan
file, and every other instance of the same group commit is stored.

Real DCMTK ``storescu`` senders against the agent's SCP in this process, a real SQLite file.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from agent.context import AgentContext, open_context
from agent.scp import StorageSCP
from agent.settings import load_settings
from tests.factory import write_series
from tests.integration.processes import acknowledged_files, free_port, storescu

pytestmark = pytest.mark.integration

SENDERS = 4
PER_SENDER = 30


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[StorageSCP, AgentContext]]:
    settings = load_settings(
        None,
        database={"url": f"sqlite:///{tmp_path / 'var' / 'db.sqlite'}"},
        spool={"path": tmp_path / "var" / "spool", "min_free_mb": 0},
        dicom={"host": "127.0.0.1", "port": free_port(), "max_associations": 10},
    )
    ctx = open_context(settings)
    server = StorageSCP(settings.dicom, ctx.ingestor, ctx.metrics)
    server.start()
    try:
        yield server, ctx
    finally:
        server.stop()
        ctx.ingestor.close()
        ctx.engine.dispose()


def test_reused_series_uid_fails_alone(
    tmp_path: Path, served: tuple[StorageSCP, AgentContext]
) -> None:
    scp, ctx = served
    first_series = generate_uid()
    first = write_series(tmp_path / "first", 3, study_uid=generate_uid(), series_uid=first_series)
    sent = storescu(scp.port, first)
    assert len(acknowledged_files(sent.stdout + sent.stderr)) == 3, sent.stderr

    # the same series UID in another study (a sender's bug, or two studies merged wrongly)
    (bad,) = write_series(tmp_path / "bad", 1, study_uid=generate_uid(), series_uid=first_series)
    lists = [
        write_series(tmp_path / f"sender{n}", PER_SENDER, study_uid=generate_uid())
        for n in range(SENDERS)
    ]
    # the bad instance comes on a fifth association while the four others send
    lists.append([*lists[0][:1], bad])
    with ThreadPoolExecutor(SENDERS + 1) as pool:
        results: list[subprocess.CompletedProcess[str]] = list(
            pool.map(lambda files: storescu(scp.port, files), lists)
        )

    outputs = [r.stdout + r.stderr for r in results]
    acked = {Path(f) for out in outputs for f in acknowledged_files(out)}
    good = {f for files in lists for f in files if f != bad}
    assert good <= acked, f"{len(good - acked)} good instances refused"
    assert bad not in acked
    assert "Received Store Response (Error: CannotUnderstand)" in outputs[-1], outputs[-1]
    assert "Received Store Response (Refused: OutOfResources)" not in "".join(outputs)

    spool_files = sorted(p for p in ctx.spool.root.rglob("*") if p.is_file())
    assert not [p for p in spool_files if p.name.startswith(".tmp-")]
    with sqlite3.connect(tmp_path / "var" / "db.sqlite") as conn:
        paths = {row[0] for row in conn.execute("select path from instances")}
        studies = conn.execute("select count(*) from studies").fetchone()[0]
    on_disk = {p.relative_to(ctx.spool.root).as_posix() for p in spool_files}
    assert on_disk == paths, f"orphan files: {sorted(on_disk - paths)[:3]}"
    assert len(paths) == 3 + SENDERS * PER_SENDER
    assert studies == 1 + SENDERS
    rejected = ctx.metrics.instances_rejected.labels("dimse", "series_in_other_study")
    assert rejected._value.get() == 1
