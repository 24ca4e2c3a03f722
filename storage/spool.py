"""The spool: received instances as DICOM Part 10 files under ``<study>/<series>/<sop>.dcm``.

Every write goes to a temporary name in the target folder, is fsynced, renamed into place, and
the folder is fsynced, so a file that exists under its final name is complete and durable.
UIDs are validated before they become path parts.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_TMP_PREFIX = ".tmp-"


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


class Spool:
    """Files of received instances, rooted at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[Path] = set()

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
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
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

    def remove_temporaries(self) -> int:
        """Delete temporary files left by a crash mid-write; return how many."""
        count = 0
        for tmp in self.root.rglob(f"{_TMP_PREFIX}*"):
            tmp.unlink(missing_ok=True)
            count += 1
        return count

    def files(self) -> Iterator[Path]:
        yield from (p for p in self.root.rglob("*.dcm") if p.is_file())

    def bytes_used(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free


def _make_dirs(folder: Path, root: Path) -> list[Path]:
    """mkdir -p below root; return the folders that were created, outermost first."""
    created: list[Path] = []
    current = folder
    while current != root and not current.exists():
        created.append(current)
        current = current.parent
    created.reverse()
    for path in created:
        path.mkdir(exist_ok=True)
    return created


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
