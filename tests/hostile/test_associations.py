"""Association abuse against the running agent: half requests and idle connections are cut
off after the negotiation timeout, associations over the limit are refused cleanly, abrupt
aborts mid-transfer leave nothing behind; and the PACS can always get through afterwards."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.factory import write_series
from tests.hostile.helpers import (
    ACSE_TIMEOUT,
    MAX_ASSOCIATIONS,
    alive,
    db_count,
    echo,
    files_under,
    outside_spool,
)
from tests.hostile.ledger import Ledger
from tests.integration.processes import STORESCU, dcmtk_env
from tests.integration.truth_agent import TruthAgentProcess

pytestmark = [pytest.mark.hostile, pytest.mark.integration, pytest.mark.slow]

#: the first bytes of an A-ASSOCIATE-RQ PDU: type 01, reserved, then a length (0xcc)
HALF_REQUEST = bytes.fromhex("01000000 00cc".replace(" ", ""))


def _closed_by_peer(sock: socket.socket, deadline_s: float) -> bool:
    """True when the agent closes the socket (EOF or reset) before the deadline."""
    sock.settimeout(deadline_s)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
            if data[:1] in (b"\x03", b"\x07"):  # A-ASSOCIATE-RJ or A-ABORT: refused, then closed
                continue
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _hold_sockets(port: int, payload: bytes, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if payload:
            sock.sendall(payload)
        socks.append(sock)
    return socks


@pytest.mark.parametrize(
    ("label", "payload"),
    [
        ("half A-ASSOCIATE-RQ (6 bytes), as many as the limit", HALF_REQUEST),
        ("idle TCP connects, as many as the limit", b""),
    ],
)
def test_stalled_clients_are_cut_off(
    shared_agent: TruthAgentProcess, ledger: Ledger, label: str, payload: bytes
) -> None:
    agent = shared_agent
    row = ledger.row("association", label, note=f"closed within {ACSE_TIMEOUT:g} s + slack")
    socks = _hold_sockets(agent.port, payload, MAX_ASSOCIATIONS)
    started = time.monotonic()
    try:
        for sock in socks:
            row.tried += 1
            left = max(ACSE_TIMEOUT * 4 - (time.monotonic() - started), 0.5)
            if _closed_by_peer(sock, left):
                row.handled += 1
    finally:
        for sock in socks:
            sock.close()
    # and the PACS gets through at once
    row.tried += 1
    row.handled += int(echo(agent.port))
    row.crashed = not alive(agent)
    assert row.holds, row.problems()


def test_associations_over_the_limit_are_refused_then_the_pacs_gets_through(
    shared_agent: TruthAgentProcess, ledger: Ledger
) -> None:
    agent = shared_agent
    extra = 3
    row = ledger.row(
        "association",
        f"{MAX_ASSOCIATIONS + extra} at once (limit {MAX_ASSOCIATIONS})",
        note="the limit established, the rest refused at once, echo after",
    )
    ae = AE(ae_title="HOSTILE")
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    held = []
    refused = 0
    try:
        for _ in range(MAX_ASSOCIATIONS + extra):
            started = time.monotonic()
            assoc = ae.associate("127.0.0.1", agent.port, ae_title="LIVERAI")
            row.tried += 1
            if assoc.is_established:
                held.append(assoc)
                row.handled += 1
            elif time.monotonic() - started < 5:  # refused, not left hanging
                refused += 1
                row.handled += 1
    finally:
        for assoc in held:
            assoc.release()
    if len(held) != MAX_ASSOCIATIONS or refused != extra:
        row.handled -= 1  # the limit did not hold
    row.tried += 1
    row.handled += int(echo(agent.port))
    row.crashed = not alive(agent)
    assert row.holds, row.problems()


def test_abrupt_aborts_mid_transfer_leave_nothing_behind(
    shared_agent: TruthAgentProcess, ledger: Ledger, tmp_path: Path
) -> None:
    agent = shared_agent
    row = ledger.row(
        "association",
        "storescu killed mid-transfer (8 MB file), x3",
        note="no temporary file, no row for the cut instance, echo after",
    )
    before = files_under(agent.workdir)
    (big,) = write_series(tmp_path / "big", 1, rows=2048, columns=2048, study_uid=generate_uid())
    instances = db_count(agent, "select count(*) from instances")
    for _ in range(3):
        sender = subprocess.Popen(
            [
                STORESCU,
                "-aec",
                "LIVERAI",
                "--max-send-pdu",
                "16384",
                "127.0.0.1",
                str(agent.port),
                str(big),
            ],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        sender.kill()
        sender.wait(10)
        row.tried += 1
        row.handled += int(echo(agent.port))
    time.sleep(1.0)
    leftovers = [p for p in agent.spool.rglob("*") if p.is_file() and p.name.startswith(".")]
    received = db_count(agent, "select count(*) from instances") - instances
    if leftovers or received not in (0, 1):
        row.handled = 0
        row.note += f"; leftovers {leftovers[:2]}, {received} new rows"
    row.outside = outside_spool(agent, files_under(agent.workdir) - before)
    row.crashed = not alive(agent)
    assert row.holds, row.problems()
