"""The spool: received instances as DICOM Part 10 files under ``<study>/<series>/<sop>.dcm``.

Every write goes to a temporary name in the target folder, is fsynced, renamed into place, and
the folder is fsynced, so a file that exists under its final name is complete and durable.
UIDs are validated before they become path parts.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_TMP_PREFIX = ".tmp-"
#: received images are patient data: readable by the agent's user only
FILE_MODE = 0o600
DIR_MODE = 0o700


class InvalidUIDError(ValueError):
    """A UID that must not become part of a path (or is not a valid DICOM UID)."""

    def __init__(self, name: str, value: object) -> None:
        self.name = name
        super().__init__(
            f"{name} {value!r} is not a valid UID (digits and dots, no leading zeros, "
            "at most 64 characters)"
        )


def validate_uid(name: str, value: object) -> str:
    """Return ``value`` if it is a valid UID (PS3.5 9.1), else raise :class:`InvalidUIDError`."""
    if not isinstance(value, str) or len(value) > 64 or not _UID.match(value):
        raise InvalidUIDError(name, value)
    return value


@dataclass(frozen=True)
class StagedFile:
    """A file written under a temporary name, not yet renamed into place."""

    temporary: Path
    target: Path
    size: int


class Spool:
    """Files of received instances, rooted at ``root``.

    Two ways to write:

    - :meth:`write`: temporary name, fsync, rename, fsync of the folder; durable on return.
    - :meth:`stage` + :meth:`publish` + :meth:`barrier`: the group-commit path of the ingest.
      Many files are staged and renamed, then one :meth:`barrier` (``syncfs``) makes all of
      them, their folder entries and anything else written on that file system (the SQLite
      WAL beside it) durable with a single flush of the disk.
    """

    def __init__(self, root: Path, *, flush: str = "files") -> None:
        if flush not in ("files", "filesystem"):
            raise ValueError(f"flush must be 'files' or 'filesystem', not {flush!r}")
        self.root = root
        self.flush = flush
        if not self.root.exists():
            self.root.parent.mkdir(parents=True, exist_ok=True)
            self.root.mkdir(mode=DIR_MODE, exist_ok=True)
        self._known_dirs: set[Path] = set()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsync")

    def relative_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """The file's path relative to the root; raises InvalidUIDError for a bad UID."""
        return (
            Path(validate_uid("StudyInstanceUID", study_uid))
            / validate_uid("SeriesInstanceUID", series_uid)
            / f"{validate_uid('SOPInstanceUID', sop_uid)}.dcm"
        )

    def path_of(self, relative: str | Path) -> Path:
        return self.root / relative

    def write(self, relative: Path, chunks: bytes | list[bytes]) -> int:
        """Write a file durably under ``relative``; return its size in bytes.

        An existing file of the same name is replaced atomically (a duplicate C-STORE).
        """
        target = self.root / relative
        folder = target.parent
        if folder not in self._known_dirs:
            new_dirs = _make_dirs(folder, self.root)
            self._known_dirs.add(folder)
        else:
            new_dirs = []
        tmp = folder / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileNotFoundError:  # the folder was removed (retention) since we made it
            new_dirs = _make_dirs(folder, self.root)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                    size += written
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        try:
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(folder)
        for created in new_dirs:
            _fsync_dir(created.parent)
        return size

    def _temporary(self, relative: Path) -> tuple[Path, Path]:
        """The target of ``relative`` and a temporary name beside it (its folder made)."""
        target = self.root / relative
        folder = target.parent
        if folder not in self._known_dirs:
            _make_dirs(folder, self.root)
            self._known_dirs.add(folder)
        return target, folder / f"{_TMP_PREFIX}{uuid.uuid4().hex}"

    def stage(self, relative: Path, data: bytes) -> StagedFile:
        """Write ``data`` under a temporary name in the target folder (no flush)."""
        target, tmp = self._temporary(relative)
        folder = target.parent
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileNotFoundError:  # the folder was removed (retention) since we made it
            _make_dirs(folder, self.root)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return StagedFile(tmp, target, len(data))

    def stage_link(self, relative: Path, source: Path, data: bytes) -> StagedFile:
        """Stage a file that already exists on the spool's file system (the native front
        end's received file) as a hard link: no second copy is written, and ``source`` stays
        until the caller removes it. Where no link can be made (another file system, a folder
        removed meanwhile), ``data`` is written as :meth:`stage` does."""
        target, tmp = self._temporary(relative)
        try:
            os.link(source, tmp)
        except OSError as err:
            if isinstance(err, FileNotFoundError) and not source.exists():
                raise
            return self.stage(relative, data)
        return StagedFile(tmp, target, len(data))

    def publish(self, staged: StagedFile) -> None:
        """Rename a staged file into place (atomic; replaces an older copy)."""
        try:
            os.replace(staged.temporary, staged.target)
        except BaseException:
            staged.temporary.unlink(missing_ok=True)
            raise

    def discard(self, staged: StagedFile) -> None:
        with contextlib.suppress(FileNotFoundError):
            staged.temporary.unlink()

    def barrier(self, files: list[Path], others: tuple[Path, ...] = ()) -> None:
        """Make ``files`` (just published), their folder entries and ``others`` durable.

        ``flush="files"``: fsync every file, every folder and every other path at once on a
        few threads (the file system merges concurrent flushes into one journal commit).
        ``flush="filesystem"``: one ``syncfs`` of the spool's file system and of the file
        systems of ``others``; cheapest when the spool has a file system of its own, slow when
        other programs keep it busy.
        """
        if self.flush == "filesystem":
            sync_filesystem(self.root)
            for other in others:
                sync_filesystem(other if other.is_dir() else other.parent)
            return
        targets = [*files, *{f.parent for f in files}, *(o for o in others if o.exists())]
        if len(targets) == 1:
            _fsync_path(targets[0])
            return
        for future in [self._pool.submit(_fsync_path, t) for t in targets]:
            future.result()

    def remove_empty_folders(self, folders: set[Path]) -> None:
        """Remove these series folders and their study folders if they are empty."""
        for folder in sorted(folders | {f.parent for f in folders}, key=lambda p: -len(p.parts)):
            if folder == self.root or self.root not in folder.parents:
                continue
            self._known_dirs.discard(folder)
            with contextlib.suppress(OSError):  # not empty (or gone): leave it
                folder.rmdir()

    def remove_temporaries(self, *, older_than_seconds: float | None = None) -> int:
        """Delete temporary files left by a crash mid-write; return how many.

        ``older_than_seconds``: only those not modified for that long (a spool shared by
        several receivers holds the others' writes in progress).
        """
        cut = None if older_than_seconds is None else time.time() - older_than_seconds
        count = 0
        for tmp in self.root.rglob(f"{_TMP_PREFIX}*"):
            try:
                if cut is not None and tmp.stat().st_mtime >= cut:
                    continue
            except FileNotFoundError:
                continue
            tmp.unlink(missing_ok=True)
            count += 1
        return count

    def files(self) -> Iterator[Path]:
        yield from (p for p in self.root.rglob("*.dcm") if p.is_file())

    def bytes_used(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def sync_filesystem(path: Path) -> None:
    """Flush the whole file system holding ``path`` to stable storage.

    Linux ``syncfs(2)``: dirty data and metadata of that file system, one journal commit and
    one cache flush. Elsewhere ``sync()``, which flushes every file system.
    """
    if _syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs failed: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


def _make_dirs(folder: Path, root: Path) -> list[Path]:
    """mkdir -p below root; return the folders that were created, outermost first."""
    created: list[Path] = []
    current = folder
    while current != root and not current.exists():
        created.append(current)
        current = current.parent
    created.reverse()
    for path in created:
        path.mkdir(mode=DIR_MODE, exist_ok=True)
    return created


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
