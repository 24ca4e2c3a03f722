"""The agent as a DICOM node, driven by real DCMTK clients (echoscu, storescu)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.integration.processes import (
    ECHOSCU,
    acknowledged_files,
    dcmtk_env,
    running_agent,
    storescu,
    wait_until,
)

pytestmark = pytest.mark.integration


def _dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part 10 file, after preamble and file meta."""
    raw = path.read_bytes()
    ds = dcmread(path, stop_before_pixels=True)
    meta_length = int(ds.file_meta.FileMetaInformationGroupLength)
    return raw[132 + 12 + meta_length :]


def _db(agent_db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(agent_db) as conn:
        return conn.execute(sql).fetchall()


def test_echoscu_and_storescu_send_a_study(tmp_path: Path, phantom_study_files: list[Path]) -> None:
    files = phantom_study_files
    with running_agent(tmp_path, worker={"threads": 0}) as agent:
        echo = subprocess.run(
            [ECHOSCU, "-aec", "LIVERAI", "127.0.0.1", str(agent.port)],
            capture_output=True,
            text=True,
            env=dcmtk_env(),
        )
        assert echo.returncode == 0, echo.stderr

        sent = storescu(agent.port, files)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sorted(acknowledged_files(sent.stdout + sent.stderr)) == sorted(map(str, files))

        # every file is in the spool with byte-identical data elements
        for path in files:
            ds = dcmread(path, stop_before_pixels=True)
            spooled = (
                agent.spool
                / ds.StudyInstanceUID
                / ds.SeriesInstanceUID
                / f"{ds.SOPInstanceUID}.dcm"
            )
            assert spooled.exists(), spooled
            assert _dataset_bytes(spooled) == _dataset_bytes(path)

        # complete after the quiet period: exactly one queued job
        wait_until(
            lambda: _db(agent.db_path, "select count(*) from jobs")[0][0] == 1,
            20,
            "a job for the completed study",
        )
        assert _db(agent.db_path, "select status, version from jobs") == [("queued", 1)]
        assert _db(agent.db_path, "select count(*) from instances")[0][0] == len(files)

        # the same study again: acknowledged, no duplicate instances, no new job
        again = storescu(agent.port, files)
        assert again.returncode == 0
        assert len(acknowledged_files(again.stdout + again.stderr)) == len(files)
        assert _db(agent.db_path, "select count(*) from instances")[0][0] == len(files)
        assert _db(agent.db_path, "select instance_count from studies") == [(len(files),)]
        assert _db(agent.db_path, "select count(*) from jobs")[0][0] == 1

        listed = agent.cli("jobs", "list", "--json")
        assert '"status": "queued"' in listed.stdout


def test_more_instances_after_completion_make_a_new_linked_job_version(tmp_path: Path) -> None:
    from tests.factory import write_series

    study_uid = generate_uid()
    first = write_series(tmp_path / "a", 3, study_uid=study_uid)
    later = write_series(tmp_path / "b", 2, study_uid=study_uid)
    with running_agent(tmp_path / "agent", worker={"threads": 0}) as agent:
        assert storescu(agent.port, first).returncode == 0
        wait_until(lambda: _db(agent.db_path, "select count(*) from jobs")[0][0] == 1, 20, "job 1")
        assert storescu(agent.port, later).returncode == 0
        wait_until(lambda: _db(agent.db_path, "select count(*) from jobs")[0][0] == 2, 20, "job 2")
        rows = _db(
            agent.db_path,
            "select id, version, previous_job_id, status, instance_count from jobs order by id",
        )
        assert rows[0][1:] == (1, None, "cancelled", 3)  # superseded while still queued
        assert rows[1][1:] == (2, rows[0][0], "queued", 5)
        shown = agent.cli("jobs", "show", str(rows[0][0]), "--json").stdout
        assert f'"next_job_id": {rows[1][0]}' in shown
        assert "superseded" in shown


def test_allow_list_rejects_unknown_calling_ae(tmp_path: Path) -> None:
    allow = {
        "allow_list_enabled": True,
        "allowed_callers": [
            {"ae_title": "GOODPACS"},
            {"ae_title": "HOSTBOUND", "host": "10.9.9.9"},
        ],
    }
    with running_agent(tmp_path, worker={"threads": 0}, dicom=allow) as agent:

        def echo(aet: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [ECHOSCU, "-aet", aet, "-aec", "LIVERAI", "127.0.0.1", str(agent.port)],
                capture_output=True,
                text=True,
                env=dcmtk_env(),
            )

        assert echo("GOODPACS").returncode == 0
        refused = echo("STRANGER")
        assert refused.returncode != 0
        assert "Association Rejected" in refused.stdout + refused.stderr
        # listed, but only from another host
        assert echo("HOSTBOUND").returncode != 0
        # wrong called AE title is refused too
        wrong_called = subprocess.run(
            [ECHOSCU, "-aet", "GOODPACS", "-aec", "NOTLIVER", "127.0.0.1", str(agent.port)],
            capture_output=True,
            text=True,
            env=dcmtk_env(),
        )
        assert wrong_called.returncode != 0
