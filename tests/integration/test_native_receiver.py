"""The native front end (``dicom.native``): DCMTK storescp on the agent's port, the agent
taking its files in behind it. Real storescu senders, a real agent process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.factory import mr_dataset, write_series
from tests.integration.processes import (
    ECHOSCU,
    STORESCU,
    AgentProcess,
    acknowledged_files,
    agent_config,
    dcmtk_env,
    free_port,
    storescu,
    wait_until,
)

pytestmark = pytest.mark.integration


def _native_dicom(*, fsync: bool) -> dict[str, object]:
    return {
        "require_called_ae": False,
        "native": {"enabled": True, "retry_seconds": 0.5, "fsync": fsync},
    }


def _count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not migrated yet


def _waiting(agent: AgentProcess) -> list[Path]:
    folder = agent.spool / "incoming"
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.exists() else []


def _received(agent: AgentProcess) -> int:
    """Instances recorded, and files waiting to be."""
    return len(_waiting(agent)) + _count(agent.db_path, "select count(*) from instances")


def _agent(tmp_path: Path, *, fsync: bool = False) -> AgentProcess:
    port, http_port = free_port(), free_port()
    config = agent_config(
        port,
        http_port,
        worker={"threads": 0},
        completion={"quiet_seconds": 1.0, "stable_seconds": 30.0, "poll_seconds": 0.2},
    )
    config["dicom"] = {**config["dicom"], **_native_dicom(fsync=fsync)}
    return AgentProcess(tmp_path / "agent", config, port, http_port)


@pytest.mark.parametrize("fsync", [False, True], ids=["page-cache", "fsync"])
def test_storescp_receives_the_agent_takes_in_and_the_study_completes(
    tmp_path: Path, fsync: bool
) -> None:
    study_uid = generate_uid()
    files = write_series(tmp_path / "series", 24, study_uid=study_uid)
    bad = mr_dataset(study_uid=generate_uid(), series_uid="1.2.840.99.abc")
    bad_path = tmp_path / "bad.dcm"
    bad.save_as(bad_path, enforce_file_format=True)
    agent = _agent(tmp_path, fsync=fsync).start()
    try:
        echo = subprocess.run(
            [ECHOSCU, "-aec", "LIVERAI", "127.0.0.1", str(agent.port)],
            capture_output=True,
            text=True,
            env=dcmtk_env(),
            timeout=30,
        )
        assert echo.returncode == 0, echo.stdout + echo.stderr
        sent = storescu(agent.port, [*files, bad_path])
        acked = acknowledged_files(sent.stdout + sent.stderr)
        assert len(acked) == 25, sent.stdout + sent.stderr  # storescp answers the bad one too
        wait_until(
            lambda: _count(agent.db_path, "select count(*) from instances") == 24,
            30,
            "the received files to be taken in",
        )
        wait_until(lambda: not _waiting(agent), 30, "incoming to empty")
        rejected = agent.spool / "rejected"
        (kept,) = [p for p in rejected.iterdir() if not p.name.endswith(".reason")]
        assert dcmread(kept).SOPInstanceUID == bad.SOPInstanceUID
        reason = kept.with_name(kept.name + ".reason").read_text()
        assert reason.startswith("invalid_uid: "), reason
        wait_until(
            lambda: _count(agent.db_path, "select count(*) from jobs") == 1,
            30,
            "the study to complete",
        )
        assert "native front end: storescp" in agent.log()
        ready = agent.api("/readyz")
        (native,) = [c for c in ready["checks"] if c["name"] == "native_front_end"]
        assert native["ok"], native
        assert "0 received files waiting" in native["detail"]
        assert "1 refused files" in native["detail"]
        metrics = requests_metrics(agent)
        assert "liver_agent_native_paused 0.0" in metrics
        assert "liver_agent_native_waiting_files 0.0" in metrics
        assert (
            'liver_agent_instances_rejected_total{protocol="dimse",reason="invalid_uid"} 1.0'
            in (metrics)
        )
    finally:
        agent.stop()
    # storescp and its association processes end with the agent
    assert not (agent.spool / "incoming" / ".storescp.pid").exists()
    assert subprocess.run(["pgrep", "-f", f"storescp.*{agent.port}"]).returncode == 1


def requests_metrics(agent: AgentProcess) -> str:
    import requests

    response = requests.get(
        f"http://127.0.0.1:{agent.http_port}/metrics",
        headers={"Authorization": f"Bearer {agent.token}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.text


def test_sigkill_of_agent_and_storescp_mid_send_keeps_every_acknowledged_instance(
    tmp_path: Path,
) -> None:
    """The harshest stop short of a power cut: the agent and every storescp process are
    SIGKILLed (as ``systemctl kill -s KILL`` does to the service's cgroup) while four
    associations send. Whatever storescp acknowledged is in the database after the restart;
    a file cut short by the kill (never acknowledged) is kept aside, not recorded."""
    study_uid = generate_uid()
    series = [
        write_series(tmp_path / f"series{n}", 150, study_uid=study_uid, rows=256, columns=256)
        for n in range(4)
    ]
    agent = _agent(tmp_path).start()
    senders = [
        subprocess.Popen(
            [
                STORESCU,
                "-v",
                "-aet",
                f"PACS{n}",
                "-aec",
                "LIVERAI",
                "127.0.0.1",
                str(agent.port),
                *map(str, files),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dcmtk_env(),
        )
        for n, files in enumerate(series)
    ]
    try:
        deadline = time.monotonic() + 60
        while _received(agent) < 40:
            assert time.monotonic() < deadline, "the first instances to arrive"
            time.sleep(0.005)
        pgid = int((agent.spool / "incoming" / ".storescp.pid").read_text())
        agent.kill()
        os.killpg(pgid, signal.SIGKILL)  # storescp and its association processes
        outputs = [proc.communicate(timeout=60)[0] for proc in senders]
    finally:
        for proc in senders:
            if proc.poll() is None:
                proc.kill()
    acked = [Path(p) for out in outputs for p in acknowledged_files(out)]
    total = sum(len(files) for files in series)
    assert 30 <= len(acked) < total, "the kill must fall in the middle of the send"

    agent.start()  # same database, spool and incoming folder
    try:
        wait_until(lambda: not _waiting(agent), 60, "the files left in incoming to be taken in")
        with sqlite3.connect(agent.db_path) as conn:
            stored = dict(conn.execute("select sop_instance_uid, path from instances"))
        for path in acked:
            ds = dcmread(path)
            assert ds.SOPInstanceUID in stored, f"acknowledged {path.name} missing from database"
            spooled = agent.spool / stored[ds.SOPInstanceUID]
            assert dcmread(spooled).PixelData == ds.PixelData
        rejected = [
            p for p in (agent.spool / "rejected").iterdir() if not p.name.endswith(".reason")
        ]
        # at most the one instance each association was writing when it was killed
        assert len(rejected) <= len(series)
        for path in rejected:
            reason = path.with_name(path.name + ".reason").read_text()
            assert reason.startswith("malformed_dataset: "), reason
        wait_until(
            lambda: _count(agent.db_path, "select count(*) from jobs") == 1,
            30,
            "the study to complete after restart",
        )
    finally:
        agent.stop()


def test_storescp_takes_dicom_tls_settings(tmp_path: Path) -> None:
    """dicom.tls is passed on to storescp: plain TCP is refused, a client without a
    certificate is refused when one is required, a client with one sends a series."""
    from tests.tls_certs import make_pki

    pki = make_pki(tmp_path / "pki")
    agent = _agent(tmp_path)
    agent.config["dicom"]["tls"] = {
        "enabled": True,
        "certificate": str(pki.server.certificate),
        "private_key": str(pki.server.private_key),
        "ca_bundle": str(pki.ca),
        "require_client_certificate": True,
    }
    files = write_series(tmp_path / "series", 5, study_uid=generate_uid())
    trust = ["+cf", str(pki.ca), "-aec", "LIVERAI", "-to", "10"]
    with_certificate = ["+tls", str(pki.client.private_key), str(pki.client.certificate), "-pw"]
    agent.start()
    try:

        def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
            targets = [str(f) for f in files] if tool == STORESCU else []
            return subprocess.run(
                [tool, *args, "127.0.0.1", str(agent.port), *targets],
                capture_output=True,
                text=True,
                env=dcmtk_env(),
                timeout=60,
                check=False,
            )

        assert run(ECHOSCU, "-aec", "LIVERAI", "-to", "5").returncode != 0  # plain TCP
        anonymous = run(ECHOSCU, "+tla", *trust)  # TLS without a client certificate
        assert anonymous.returncode != 0, anonymous.stdout + anonymous.stderr
        assert "Association Request Failed" in anonymous.stdout + anonymous.stderr
        certified = run(ECHOSCU, *with_certificate, *trust)
        assert certified.returncode == 0, certified.stdout + certified.stderr
        sent = run(STORESCU, *with_certificate, *trust)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        wait_until(
            lambda: _count(agent.db_path, "select count(*) from instances") == 5,
            30,
            "the series sent over TLS to be taken in",
        )
    finally:
        agent.stop()
