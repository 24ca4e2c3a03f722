"""The native front end: DCMTK ``storescp`` receives C-STORE, the agent takes the files in.

A Python SCP spends ~5 ms of one interpreter on every instance (pynetdicom's threads and the
agent's checks), which caps ingest at about a third of Orthanc's rate. With
``dicom.native.enabled`` the agent runs DCMTK's ``storescp`` on its port instead (one process
per association, ``--fork``), the way mercure does: storescp writes each instance under a name
of its own making into ``<spool>/incoming`` and answers; the agent is told by the kernel
(inotify ``IN_CLOSE_WRITE``) when a file is complete, and :class:`IncomingIndexer` passes the
files, many at a time, to :meth:`agent.ingest.Ingestor.store_batch`: the checks of the Python
SCP's path (UID validation before any path is made from a UID, the duplicate and series
checks), each file hard-linked into its place in the spool, the rows of the batch in one
multi-row insert, one flush for all; then it removes them from ``incoming``.

What changes (README, "Fast ingest: the native front end"):

- Success is answered once storescp has written the file (no fsync): it survives a SIGKILL of
  storescp or of the agent (the file is in the page cache; the agent takes it in at the next
  start), but not a power cut before the agent has taken it in (its own fsync), typically
  milliseconds to seconds later. With ``native.fsync`` storescp has the file and its folder
  flushed (a ``sync`` process per instance) before it answers: durable like the agent's own
  SCP, at about a fifth of the speed.
- A data set the agent refuses (malformed, invalid UID, series in another study) has already
  been acknowledged: it is kept in ``<spool>/rejected`` with a ``.reason`` file (for
  ``spool.retention_days``: :func:`agent.retention.clean_rejected`), counted in
  ``liver_agent_instances_rejected`` and logged, instead of being answered with a failure.
- A file the spool or the database cannot take now (disk full, database down) stays in
  ``incoming`` and is tried again; storescp itself answers 0xA700 when it cannot write, and
  is stopped while the spool has less than ``spool.min_free_mb`` free.
- storescp does not check calling or called AE titles: the settings refuse those
  combinations (:class:`agent.settings.NativeFrontEnd`). DICOM TLS is passed on to it
  (``+tls``, BCP 195 non-downgrading), with an unencrypted private key only (a password would
  stand on its command line).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import heapq
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as inotify_flags

from agent.dicom_status import StoreStatus
from agent.errors import AgentError, IngestError
from agent.ingest import Ingestor
from agent.settings import DicomSettings
from storage.models import IngestProtocol

logger = logging.getLogger(__name__)

INCOMING = "incoming"
REJECTED = "rejected"
_PID_FILE = ".storescp.pid"
_PR_SET_PDEATHSIG = 1
_RESUME_MARGIN = 64 * 2**20  # free space above spool.min_free_mb before storescp starts again


def incoming_folder(spool_root: Path, configured: Path | None = None) -> Path:
    """Where storescp writes: ``dicom.native.incoming`` if set, else ``<spool>/incoming``."""
    return configured if configured is not None else spool_root / INCOMING


def rejected_folder(spool_root: Path) -> Path:
    return spool_root / REJECTED


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """storescp's listener ends when the agent does, even after a SIGKILL (Linux)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def storescp_command(settings: DicomSettings, incoming: Path) -> list[str]:
    """The storescp command line for these settings."""
    native = settings.native
    tls: list[str] = []
    if settings.tls.enabled:  # BCP 195 non-downgrading (TLS 1.2+): storescp's default profile
        key, certificate = settings.tls.private_key, settings.tls.certificate
        tls = ["+tls", str(key), str(certificate), "-pw"]  # an unencrypted key (settings)
        if settings.tls.ca_bundle is not None:
            tls += ["+cf", str(settings.tls.ca_bundle)]
        tls.append(
            "-rc"  # no certificate, no association
            if settings.tls.require_client_certificate
            else "-vc"  # checked if presented
            if settings.tls.ca_bundle is not None
            else "-ic"
        )
    durable = []
    if native.fsync:
        # storescp runs the command through /bin/sh and answers once it has ended: the file
        # (#f: storescp's own name, never a sender's UID) and its folder are on disk first
        folder = shlex.quote(str(incoming))
        durable = ["-xcr", f"sync -- {folder}/#f {folder}", "-xs"]
    return [
        native.storescp,
        "--fork",  # a process per association: associations in parallel, outside any GIL
        "+uf",  # unique file names of storescp's making: no path is made from a sender's UID
        "+xa",  # accept every transfer syntax storescp knows (compressed ones too)
        "-aet",
        settings.ae_title,
        "-od",
        str(incoming),
        "-pdu",
        str(native.max_pdu),
        "-ta",
        str(max(1, round(settings.acse_timeout))),
        "-td",
        str(max(1, round(settings.dimse_timeout))),
        "-ts",
        str(max(1, round(settings.network_timeout))),
        "-dhl",  # no reverse DNS lookup per association
        "-ll",
        "warn",
        *tls,
        *durable,
        str(settings.port),
    ]


def front_end_state(settings: DicomSettings, spool_root: Path) -> tuple[int | None, int, int]:
    """What any process can see of the native front end: the pid of a running storescp
    (None: not running), the files waiting in ``incoming`` and those kept in ``rejected``."""
    incoming = incoming_folder(spool_root, settings.native.incoming)
    rejected = rejected_folder(spool_root)
    pid = _recorded_pid(incoming / _PID_FILE)
    if pid is not None and not _is_program(pid, settings.native.storescp):
        pid = None

    def count(folder: Path, keep: Callable[[str], bool]) -> int:
        try:
            return sum(1 for p in folder.iterdir() if keep(p.name))
        except OSError:
            return 0

    waiting = count(incoming, _is_candidate)
    refused = count(rejected, lambda n: _is_candidate(n) and not n.endswith(".reason"))
    return pid, waiting, refused


class StorescpFrontEnd:
    """Runs and supervises ``storescp`` in a process group of its own.

    The group (storescp and one child per association) is stopped with the agent; a group left
    by an agent that was killed is stopped at the next start (its pid is kept in
    ``incoming/.storescp.pid``) before the files are taken in. If storescp exits on its own it
    is started again after a second.

    Below ``min_free_bytes`` of free disk in the spool the group is stopped (new associations
    are refused, those in progress are cut: the PACS sends their unanswered instances again
    later), as the agent's own SCP answers 0xA700 there; it starts again once 64 MiB more than
    that are free.
    """

    def __init__(
        self,
        settings: DicomSettings,
        incoming: Path,
        *,
        min_free_bytes: int = 0,
        free_bytes: Callable[[], int] | None = None,
        on_paused: Callable[[bool], None] | None = None,
        check_seconds: float = 0.5,
    ) -> None:
        self.settings = settings
        self.incoming = incoming
        self.min_free_bytes = min_free_bytes
        self._free_bytes = free_bytes or (lambda: shutil.disk_usage(self.incoming).free)
        self._on_paused = on_paused
        self.check_seconds = check_seconds
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None
        #: stopped for lack of disk space
        self.paused = False

    @property
    def pid_file(self) -> Path:
        return self.incoming / _PID_FILE

    def stop_leftover(self) -> bool:
        """Stop the storescp group of a previous agent process, if one is still running."""
        pid = _recorded_pid(self.pid_file)
        if pid is None:
            return False
        found = _is_program(pid, self.settings.native.storescp)
        if found:
            logger.warning("stopping storescp (pid %s) left by an earlier agent process", pid)
            _stop_group(pid, timeout=5.0)
        else:  # the group leader is gone: its children may still hold associations
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        self.pid_file.unlink(missing_ok=True)
        return found

    def start(self, *, timeout: float = 10.0) -> None:
        """Start storescp and return once it listens.

        Raises
        ------
        AgentError
            ``storescp_missing`` when the program is not there, ``storescp_failed`` when it
            exits at once (the port is taken, a bad option) or does not listen in ``timeout``.
        """
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.stop_leftover()
        self._stopping.clear()
        try:
            self._spawn()
        except OSError as err:
            raise AgentError(
                "storescp_missing",
                f"cannot run dicom.native.storescp {self.settings.native.storescp!r}: {err} "
                "(install DCMTK: the Debian package dcmtk)",
            ) from err
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        settled = 0.0  # listening, and still running a moment later (another process may
        while True:  # hold the port: then storescp exits at once)
            code = proc.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                raise AgentError(
                    "storescp_failed",
                    f"storescp did not start listening on port {self.settings.port}"
                    + ("" if code is None else f" (it exited with status {code}: port taken?)"),
                )
            if _listening(self.settings.port):
                settled = settled or time.monotonic()
                if time.monotonic() - settled >= 0.3:
                    break
            time.sleep(0.02)
        self._watch = threading.Thread(target=self._supervise, name="storescp", daemon=True)
        self._watch.start()

    def _spawn(self) -> None:
        command = storescp_command(self.settings, self.incoming)
        self._proc = subprocess.Popen(  # the configured storescp, no shell
            command,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped as a whole
            preexec_fn=_die_with_parent,  # prctl only, between fork and exec
            # without TCP_NODELAY DCMTK stalls ~40 ms a message (Nagle + delayed ACK)
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        tmp = self.pid_file.with_name(_PID_FILE + ".tmp")
        tmp.write_text(f"{self._proc.pid}\n")
        tmp.replace(self.pid_file)
        logger.info(
            "native front end: storescp (pid %s) receives C-STORE for %s on port %s into %s",
            self._proc.pid,
            self.settings.ae_title,
            self.settings.port,
            self.incoming,
        )

    def _supervise(self) -> None:
        while not self._stopping.wait(self.check_seconds):
            try:
                self._check()
            except Exception:  # the watch must go on
                logger.exception("native front end: supervision failed")

    def _check(self) -> None:
        free = self._free_bytes() if self.min_free_bytes else 0
        if self.paused:
            if free >= self.min_free_bytes + _RESUME_MARGIN:
                self._resume()
            return
        if free < self.min_free_bytes:
            self._pause()
            return
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        logger.error("storescp exited with status %s: starting it again in 1 s", proc.returncode)
        if self._stopping.wait(1.0):
            return
        try:
            self._spawn()
        except OSError:
            logger.exception("cannot start storescp")
            self._stopping.wait(5.0)

    def _pause(self) -> None:
        proc = self._proc
        if proc is not None:
            _stop_group(proc.pid, timeout=5.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
        self._proc = None
        self.paused = True
        logger.error(
            "native front end stopped: less than %s MiB free in the spool (spool.min_free_mb); "
            "C-STORE associations are refused until %s MiB are free",
            self.min_free_bytes // 2**20,
            (self.min_free_bytes + _RESUME_MARGIN) // 2**20,
        )
        if self._on_paused is not None:
            self._on_paused(True)

    def _resume(self) -> None:
        try:
            self._spawn()
        except OSError:
            logger.exception("cannot start storescp")
            return
        self.paused = False
        logger.warning("native front end started again: the spool has room")
        if self._on_paused is not None:
            self._on_paused(False)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop storescp and its association processes (an association in progress is cut:
        its unanswered instances are sent again by the PACS)."""
        self._stopping.set()
        proc = self._proc
        if proc is not None:
            _stop_group(proc.pid, timeout=5.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
        if self._watch is not None:
            self._watch.join(timeout=5.0)
        self.pid_file.unlink(missing_ok=True)
        self._proc = None


def _recorded_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_program(pid: int, program: str) -> bool:
    """Whether process ``pid`` runs ``program`` (Linux /proc; a reused pid is not ours)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return Path(os.fsdecode(argv0)).name == Path(program).name


def _listening(port: int) -> bool:
    """Whether a TCP socket listens on ``port`` (any address; Linux /proc/net)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(wanted):
                return True
    return False


def _stop_group(pgid: int, *, timeout: float) -> None:
    """SIGTERM to the process group, SIGKILL to whatever is left after ``timeout``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-pgid, os.WNOHANG)  # reap our own child if it is the leader
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class IncomingIndexer:
    """Takes the files storescp writes into ``incoming`` in, as they are closed.

    Names reported by inotify wait in a queue; up to ``threads`` drainers each take what is
    waiting (at most ``batch_files`` files or ``batch_bytes``) and store it as one batch
    (:meth:`agent.ingest.Ingestor.store_batch`: one multi-row insert, the files linked into
    place, one flush), so the busier the front end, the larger the batches.

    Parameters
    ----------
    ingestor
        The agent's ingest (validation, spool, rows, group commit).
    incoming, rejected
        Where storescp writes; where refused files are kept with their reason.
    threads
        Batches taken in at once (they share the ingest's flushes).
    retry_seconds
        Wait before trying again a file the spool or database could not take.
    source_ae
        The sender to record (``dicom.native.source_ae``): routing ``route: source`` goes by it.
    """

    def __init__(
        self,
        ingestor: Ingestor,
        incoming: Path,
        rejected: Path,
        *,
        threads: int = 4,
        retry_seconds: float = 5.0,
        batch_files: int = 64,
        batch_bytes: int = 64 * 2**20,
        source_ae: str | None = None,
    ) -> None:
        self.ingestor = ingestor
        #: recorded as the sender of every instance (storescp does not pass the calling AE on)
        self.source_ae = source_ae
        self.incoming = incoming
        self.rejected = rejected
        self.threads = threads
        self.retry_seconds = retry_seconds
        self.batch_files = batch_files
        self.batch_bytes = batch_bytes
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="index")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inotify: INotify | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: deque[str] = deque()  # names waiting for a drainer
        self._known: set[str] = set()  # waiting or being taken in
        self._drainers = 0
        self._retry: list[tuple[float, str]] = []  # (due, name), a heap
        #: counts for the log and the tests
        self.taken = 0
        self.refused = 0
        #: called when the backlog is empty after files were taken in (completion check)
        self.on_drained: Callable[[], None] | None = None

    def start(self) -> None:
        """Watch, then take in what is already there (files of an earlier run), then follow."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.rejected.mkdir(parents=True, exist_ok=True)
        self._inotify = INotify()
        self._inotify.add_watch(self.incoming, inotify_flags.CLOSE_WRITE | inotify_flags.MOVED_TO)
        waiting = sorted(
            (p for p in self.incoming.iterdir() if _is_candidate(p.name)),
            key=lambda p: p.stat().st_mtime,
        )
        if waiting:
            logger.info("native front end: %s received files waiting to be taken in", len(waiting))
        for path in waiting:
            self._dispatch(path.name)
        self._thread = threading.Thread(target=self._follow, name="incoming", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following; the batches being taken in finish, the files still waiting stay in
        ``incoming`` for the next start."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._inotify is not None:
            self._inotify.close()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no file is waiting, being taken in or waiting for a retry."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._known and not self._retry, timeout)

    @property
    def backlog(self) -> int:
        with self._lock:
            return len(self._known) + len(self._retry)

    # the watch ------------------------------------------------------------------------------

    def _follow(self) -> None:
        assert self._inotify is not None
        while not self._stop.is_set():
            try:
                events = self._inotify.read(timeout=200)
            except OSError:
                if self._stop.is_set():
                    return
                logger.exception("inotify read failed")
                time.sleep(0.2)
                continue
            for event in events:
                if event.mask & inotify_flags.Q_OVERFLOW:  # events were lost: look again
                    logger.warning("inotify queue overflow: scanning the incoming folder")
                    for path in self.incoming.iterdir():
                        if _is_candidate(path.name):
                            self._dispatch(path.name)
                elif event.name and _is_candidate(event.name):
                    self._dispatch(event.name)
            self._retry_due()

    def _retry_due(self) -> None:
        now = time.monotonic()
        due = []
        with self._lock:
            while self._retry and self._retry[0][0] <= now:
                due.append(heapq.heappop(self._retry)[1])
        for name in due:
            self._dispatch(name)

    def _dispatch(self, name: str) -> None:
        with self._lock:
            if name in self._known or self._stop.is_set():
                return
            self._known.add(name)
            self._queue.append(name)
            if self._drainers >= self.threads:
                return  # a drainer will take it
            self._drainers += 1
        try:
            self._pool.submit(self._drain)
        except RuntimeError:  # shutting down: the file stays for the next start
            with self._lock:
                self._drainers -= 1

    def _drain(self) -> None:
        while True:
            with self._idle:
                if not self._queue or self._stop.is_set():
                    self._drainers -= 1
                    return
                count = min(len(self._queue), self.batch_files)
                names = [self._queue.popleft() for _ in range(count)]
            names = self._within_bytes(names)
            try:
                retry = self._take(names)
            except Exception:  # a bug must not stop the others; the files stay for a retry
                logger.exception("cannot take in %s received files", len(names))
                retry = set(names)
            self._finished(names, retry if not self._stop.is_set() else set())

    def _within_bytes(self, names: list[str]) -> list[str]:
        """The first of ``names`` that fit in ``batch_bytes`` (at least one); the others go
        back to the front of the queue (sizes read outside the lock)."""
        size, keep = 0, 0
        for name in names:
            size += _size(self.incoming / name)
            keep += 1
            if size >= self.batch_bytes:
                break
        if keep < len(names):
            with self._lock:
                self._queue.extendleft(reversed(names[keep:]))
        return names[:keep]

    def _finished(self, names: list[str], retry: set[str]) -> None:
        due = time.monotonic() + self.retry_seconds
        with self._idle:
            for name in names:
                self._known.discard(name)
                if name in retry:
                    heapq.heappush(self._retry, (due, name))
            drained = not self._known and not self._retry
            if drained:
                self._idle.notify_all()
        if drained and self.on_drained is not None:
            try:
                self.on_drained()
            except Exception:
                logger.exception("on_drained failed")

    # a batch --------------------------------------------------------------------------------

    def _take(self, names: list[str]) -> set[str]:
        """Take a batch in; return the names to try again later."""
        items: list[tuple[bytes, Path | None]] = []
        paths: list[Path] = []
        for name in names:
            path = self.incoming / name
            try:
                items.append((path.read_bytes(), path))
            except FileNotFoundError:  # taken in already (a second event for one file)
                continue
            paths.append(path)
        if not items:
            return set()
        retry: set[str] = set()
        taken = refused = 0
        for path, outcome in zip(
            paths,
            self.ingestor.store_batch(items, protocol=_PROTOCOL, source_ae=self.source_ae),
            strict=True,
        ):
            if not isinstance(outcome, IngestError):
                path.unlink(missing_ok=True)
                taken += 1
            elif outcome.status == StoreStatus.OUT_OF_RESOURCES:
                logger.warning(
                    "received file %s waits: %s (%s); trying again in %g s",
                    path.name,
                    outcome.message,
                    outcome.code,
                    self.retry_seconds,
                )
                retry.add(path.name)
            else:
                self._reject(path, outcome)
                refused += 1
        with self._lock:
            self.taken += taken
            self.refused += refused
        return retry

    def _reject(self, path: Path, err: IngestError) -> None:
        """Keep a refused file (it was acknowledged) with its reason beside it."""
        target = self.rejected / path.name
        reason = target.with_name(target.name + ".reason")
        reason.write_text(f"{err.code}: {err.message}\n", encoding="utf-8")
        os.replace(path, target)
        logger.error(
            "received file %s refused after storescp acknowledged it: %s (%s); kept as %s",
            path.name,
            err.message,
            err.code,
            target,
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


_PROTOCOL = IngestProtocol.DIMSE


def _is_candidate(name: str) -> bool:
    """storescp's files; not our pid file or anything hidden."""
    return not name.startswith(".")
