"""Ingest throughput: DCMTK storescu -> the agent, DCMTK storescp and Orthanc, in one run.

The agent runs twice: with its own SCP, and with its native front end (DCMTK storescp in
front, ``dicom.native``), for which the time until every file was taken in (rows committed,
files fsynced) is reported beside the time until every instance was acknowledged.
Also a pynetdicom SCP with a handler that does nothing (the floor of any pynetdicom receiver;
it runs inside this process, which only waits for storescu meanwhile).

    .venv/bin/python -m bench.ingest [--images 1000] [--size 256] [--parallel 4]

Each receiver gets the same files, over one association and then over N parallel ones
(N storescu processes), with a fresh storage folder each time. The agent runs with its
durability rule on (rename + committed rows, then fsync of the files, their folders and the
SQLite WAL before each success; the default SQLite synchronous NORMAL) and no workers.
TCP_NODELAY=1 is set for every DCMTK-based process (storescu, storescp, Orthanc); without it
they stall ~40 ms a message on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom.uid import generate_uid

from tests.factory import write_series
from tests.integration.processes import (
    STORESCP,
    STORESCU,
    AgentProcess,
    agent_config,
    dcmtk_env,
    free_port,
    wait_for_port,
)

Receiver = Callable[[Path], "contextmanager[tuple[int, str]]"]


FLUSH = "files"


@contextmanager
def _agent(workdir: Path, **dicom: object) -> Iterator[tuple[int, str]]:
    """An agent without workers, HTTP or completion, ``dicom`` settings on top."""
    port, http_port = free_port(), free_port()
    config = agent_config(
        port,
        http_port,
        worker={"threads": 0},
        http={"enabled": False, "host": "127.0.0.1", "port": http_port},
        completion={"quiet_seconds": 3600, "stable_seconds": 7200, "poll_seconds": 5},
        logging={"level": "WARNING"},
    )
    config["dicom"].update(dicom)
    config["spool"] = {"flush": FLUSH}
    agent = AgentProcess(workdir, config, port, http_port).start()
    try:
        yield port, "LIVERAI"
    finally:
        agent.stop()


def agent_receiver(workdir: Path) -> contextlib.AbstractContextManager[tuple[int, str]]:
    """The agent with its own SCP."""
    return _agent(workdir, max_associations=16)


def native_receiver(workdir: Path) -> contextlib.AbstractContextManager[tuple[int, str]]:
    """The agent with its native front end (``dicom.native``): storescp answers once the file
    is written; the agent takes it in behind (see agent/native_receiver.py)."""
    return _agent(workdir, require_called_ae=False, native={"enabled": True})


def native_fsync_receiver(workdir: Path) -> contextlib.AbstractContextManager[tuple[int, str]]:
    """The native front end with ``native.fsync``: storescp answers once a ``sync`` process
    has flushed the file and its folder."""
    return _agent(workdir, require_called_ae=False, native={"enabled": True, "fsync": True})


def _taken_in(workdir: Path, images: int, started: float, timeout: float = 600) -> float:
    """Wait until the native agent in ``workdir`` recorded ``images`` instances and emptied its
    incoming folder; return seconds since ``started``."""
    import sqlite3

    db = workdir / "var" / "liver-agent.db"
    incoming = workdir / "var" / "spool" / "incoming"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(db, timeout=5) as conn:
                count = int(conn.execute("select count(*) from instances").fetchone()[0])
        except sqlite3.OperationalError:
            count = 0
        if count >= images and not [p for p in incoming.iterdir() if p.name[0] != "."]:
            return time.perf_counter() - started
        time.sleep(0.01)
    raise RuntimeError(f"the native agent took in only {count} of {images} in {timeout} s")


@contextmanager
def pynetdicom_receiver(workdir: Path) -> Iterator[tuple[int, str]]:
    """The floor of any pynetdicom receiver: the agent's AE settings, a C-STORE handler that
    takes the encoded data set and answers success (nothing parsed, nothing written)."""
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

    def handler(event: evt.Event) -> int:
        event.encoded_dataset(include_meta=True)
        return 0x0000

    ae = AE(ae_title="NULLSCP")
    ae.maximum_pdu_size = 0
    ae.maximum_associations = 16
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handler)]
    )
    try:
        yield port, "NULLSCP"
    finally:
        server.shutdown()


@contextmanager
def storescp_receiver(workdir: Path) -> Iterator[tuple[int, str]]:
    port = free_port()
    out = workdir / "storescp"
    out.mkdir(parents=True)
    proc = subprocess.Popen(
        [STORESCP, "--fork", "-aet", "STORESCP", "-od", str(out), str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 20, proc)
        yield port, "STORESCP"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def orthanc_receiver(workdir: Path) -> Iterator[tuple[int, str]]:
    port, http_port = free_port(), free_port()
    storage = workdir / "orthanc"
    storage.mkdir(parents=True)
    config = {
        "Name": "bench",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "Plugins": [],
        "StorageCompression": False,
        "DicomThreadsCount": 8,
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        ["Orthanc", str(config_path)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 30, proc)
        yield port, "ORTHANC"
    finally:
        proc.terminate()
        proc.wait(30)


def send(port: int, aec: str, groups: list[list[Path]], started: float | None = None) -> float:
    """Run one storescu per group at once; return seconds until all finished."""
    started = time.perf_counter() if started is None else started
    procs = [
        subprocess.Popen(
            [STORESCU, "-aet", "BENCH", "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
            env=dcmtk_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for files in groups
    ]
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed ({proc.returncode}): {out[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="runs per receiver and mode")
    parser.add_argument(
        "--flush", choices=("files", "filesystem"), default="files", help="agent spool.flush"
    )
    args = parser.parse_args()
    global FLUSH
    FLUSH = args.flush
    if not shutil.which("Orthanc"):
        sys.exit("Orthanc is not installed (make system-packages)")

    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        root = Path(tmp)
        study = generate_uid()
        files = write_series(
            root / "data", args.images, study_uid=study, rows=args.size, columns=args.size
        )
        mb = sum(f.stat().st_size for f in files) / 2**20
        print(
            f"{args.images} MR images {args.size}x{args.size} ({mb:.0f} MiB), "
            f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
            f"agent spool.flush={FLUSH}"
        )
        receivers: dict[str, Callable[[Path], object]] = {
            "agent": agent_receiver,
            "native": native_receiver,
            "native+fsync": native_fsync_receiver,
            "storescp": storescp_receiver,
            "orthanc": orthanc_receiver,
            "pynetdicom": pynetdicom_receiver,
        }
        chunk = -(-len(files) // args.parallel)
        modes = {
            "1 association": [files],
            f"{args.parallel} associations": [
                files[i : i + chunk] for i in range(0, len(files), chunk)
            ],
        }
        results: dict[tuple[str, str], float] = {}
        for mode, groups in modes.items():
            for name, receiver in receivers.items():
                best = best_taken = 0.0
                for run in range(args.repeat):
                    workdir = root / f"{name}-{mode.split()[0]}-{run}"
                    with receiver(workdir) as (port, aec):  # type: ignore[attr-defined]
                        started = time.perf_counter()
                        seconds = send(port, aec, groups, started)
                        if name.startswith("native"):
                            taken = _taken_in(workdir, len(files), started)
                            best_taken = max(best_taken, len(files) / taken)
                    best = max(best, len(files) / seconds)
                    shutil.rmtree(workdir, ignore_errors=True)
                results[(mode, name)] = best
                extra = ""
                if name.startswith("native"):
                    results[(mode, f"{name} taken in")] = best_taken
                    extra = f" acknowledged, {best_taken:7.1f} images/s taken in (durable)"
                print(f"  {mode:>15}  {name:>12}: {best:7.1f} images/s{extra}")
        print()
        print(
            "| mode | agent | native: acknowledged / taken in | native+fsync: acknowledged / "
            "taken in | storescp | Orthanc | pynetdicom, null handler | agent / Orthanc "
            "| native / Orthanc | native+fsync / Orthanc |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for mode in modes:
            r = {name: results[(mode, name)] for (m, name) in results if m == mode}
            o = r["orthanc"]
            print(
                f"| {mode} | {r['agent']:.0f} | {r['native']:.0f} / {r['native taken in']:.0f} "
                f"| {r['native+fsync']:.0f} / {r['native+fsync taken in']:.0f} "
                f"| {r['storescp']:.0f} | {o:.0f} | {r['pynetdicom']:.0f} "
                f"| {r['agent'] / o:.2f}x | {r['native'] / o:.2f}x "
                f"| {r['native+fsync'] / o:.2f}x |"
            )


if __name__ == "__main__":
    main()
