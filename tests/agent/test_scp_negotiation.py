"""Association abuse: half an A-ASSOCIATE-RQ must not hold one of ``max_associations`` forever.

Real DCMTK ``echoscu`` against the agent's SCP on loopback; the bad clients are raw sockets.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.context import AgentContext, open_context
from agent.scp import StorageSCP
from agent.settings import load_settings
from tests.integration.processes import ECHOSCU, dcmtk_env, free_port

pytestmark = pytest.mark.integration

# long enough that a loaded machine still starts echoscu while the half requests hold the slots
ACSE_TIMEOUT = 6.0
NETWORK_TIMEOUT = 7.0
MAX_ASSOCIATIONS = 3
# type 0x01 (A-ASSOCIATE-RQ), reserved, length 0xcc: then nothing of the 204 bytes announced
HALF_REQUEST = bytes.fromhex("0100000000cc")


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[StorageSCP]:
    settings = load_settings(
        None,
        database={"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        spool={"path": tmp_path / "spool", "min_free_mb": 0},
        dicom={
            "host": "127.0.0.1",
            "port": free_port(),
            "max_associations": MAX_ASSOCIATIONS,
            "acse_timeout": ACSE_TIMEOUT,
            "network_timeout": NETWORK_TIMEOUT,
            "dimse_timeout": 5.0,
        },
    )
    ctx: AgentContext = open_context(settings)
    server = StorageSCP(settings.dicom, ctx.ingestor, ctx.metrics)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        ctx.ingestor.close()
        ctx.engine.dispose()


def _echo(port: int) -> bool:
    done = subprocess.run(
        [ECHOSCU, "-aec", "LIVERAI", "-to", "5", "-ta", "5", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        timeout=30,
        check=False,
    )
    return done.returncode == 0


def _drip(sock: socket.socket, stop: threading.Event) -> None:
    """A slow client: one more byte of the request every 0.5 s (no read ever times out)."""
    while not stop.wait(0.5):
        try:
            sock.sendall(b"\x00")
        except OSError:
            return


@pytest.mark.parametrize("kind", ["silent", "dripping"])
def test_half_association_requests_do_not_lock_the_scp_out(scp: StorageSCP, kind: str) -> None:
    assert _echo(scp.port), "the SCP does not answer an echo at all"
    stop = threading.Event()
    sockets = []
    threads = []
    try:
        for _ in range(MAX_ASSOCIATIONS):
            sock = socket.create_connection(("127.0.0.1", scp.port), timeout=5)
            sock.sendall(HALF_REQUEST)
            sockets.append(sock)
            if kind == "dripping":
                thread = threading.Thread(target=_drip, args=(sock, stop), daemon=True)
                thread.start()
                threads.append(thread)
        time.sleep(0.3)
        assert not _echo(scp.port), "the half requests should hold every slot for a while"
        deadline = time.monotonic() + max(ACSE_TIMEOUT, NETWORK_TIMEOUT) + 5.0
        while not _echo(scp.port):
            assert time.monotonic() < deadline, "echo still refused: half requests hold the SCP"
            time.sleep(0.2)
        if kind == "silent":
            # the agent closed the connections it gave up on
            for sock in sockets:
                sock.settimeout(2)
                data = b"x"
                while data:
                    data = sock.recv(4096)
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
        for thread in threads:
            thread.join(5)
