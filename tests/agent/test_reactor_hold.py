"""The association reactor is held while the agent waits for responses (agent.reactor_hold)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage

from agent.delivery import send_dimse
from agent.errors import ExportError
from agent.reactor_hold import reactor_held
from agent.settings import Destination
from tests.integration.processes import STORESCP, dcmtk_env, free_port, wait_for_port
from tests.pipeline.outputs.synthetic_mr import make_mr_series

pytestmark = pytest.mark.integration  # DCMTK storescp, real associations


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    folder = tmp_path / "received"
    folder.mkdir()
    proc = subprocess.Popen(
        [STORESCP, "-aet", "DEST", "-od", str(folder), str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, 20, proc)
    yield port, folder
    proc.terminate()
    proc.wait(10)


def _files(tmp_path: Path, count: int) -> list[Path]:
    paths = []
    for index, ds in enumerate(make_mr_series(count, 16, 16)):
        path = tmp_path / f"mr{index}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_requests_go_out_only_while_the_reactor_is_blocked_and_it_runs_again_after(
    storescp: tuple[int, Path], tmp_path: Path
) -> None:
    port, folder = storescp
    ae = AE("AGENT")
    ae.dimse_timeout = 20
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="DEST")
    assert assoc.is_established
    original = assoc._reactor_checkpoint
    blocked_during_sends: list[bool] = []

    def trace(event: evt.Event) -> None:
        # the reactor thread is the association thread: at every outgoing request it must be
        # waiting on the held checkpoint, so it cannot take the response off the queue
        blocked_during_sends.append(bool(assoc._reactor_checkpoint.has_waiter()))

    assoc.bind(evt.EVT_DIMSE_SENT, trace)
    datasets = [dcmread(p) for p in _files(tmp_path, 20)]
    # a tiny switch interval makes the reactor thread run between any two bytecodes of ours
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        with reactor_held(assoc) as held:
            assert held is True
            statuses = [assoc.send_c_store(ds).Status for ds in datasets]
            # pynetdicom's send_c_store tries to re-open the checkpoint after each response
            assert assoc._reactor_checkpoint.has_waiter()
    finally:
        sys.setswitchinterval(interval)
    assert statuses == [0x0000] * 20
    assert blocked_during_sends == [True] * 20
    assert assoc._reactor_checkpoint is original
    assert original.is_set()
    assoc.release()
    assert not assoc.is_established
    assoc.join(10)  # the reactor ended: the hold left no thread behind
    assert not assoc.is_alive()
    assert len(list(folder.iterdir())) == 20


def test_a_peer_that_aborts_mid_association_fails_the_attempt_with_a_reason(
    tmp_path: Path,
) -> None:
    """With the reactor held, an A-ABORT from the peer still ends the attempt: the waiting
    request is answered by the abort, or the next one is never sent."""
    seen: list[str] = []

    def on_store(event: evt.Event) -> int:
        seen.append(str(event.request.AffectedSOPInstanceUID))
        if len(seen) == 3:
            event.assoc.abort()
        return 0x0000

    scp_ae = AE("DEST")
    scp_ae.add_supported_context(MRImageStorage)
    port = free_port()
    server = scp_ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    destination = Destination.model_validate(
        {"name": "pacs", "ae_title": "DEST", "host": "127.0.0.1", "port": port}
    )
    files = _files(tmp_path, 8)
    started = time.monotonic()
    try:
        with pytest.raises(ExportError) as err:
            send_dimse(destination, files, calling_ae="AGENT", timeout=30.0)
    finally:
        server.shutdown()
    assert err.value.code in {"store_no_response", "association_aborted"}
    assert len(seen) == 3
    # the abort ends the wait: nowhere near the 30 s DIMSE timeout (a generous bound, so
    # that a slow machine cannot fail it)
    assert time.monotonic() - started < 25


def test_without_pynetdicom_internals_the_hold_is_a_no_op() -> None:
    class Bare:
        is_established = True

    bare: Any = Bare()
    with reactor_held(bare) as held:
        assert held is False
    assert not hasattr(bare, "_reactor_checkpoint")
