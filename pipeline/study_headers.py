"""Read the headers of one study's DICOM files (no pixel data) and group them by series."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pipeline.errors import NotEvaluatedError, PipelineError

logger = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR (PS3.10 Media Storage Directory)


@dataclass(frozen=True, eq=False)
class SeriesHeaders:
    """The headers of one series, one dataset per file, read without pixel data."""

    series_instance_uid: str
    headers: tuple[Dataset, ...]
    paths: tuple[Path, ...]  # same order as headers

    @property
    def series_number(self) -> int | None:
        """SeriesNumber of the first header, if it has one."""
        return _int_or_none(header_value(self.headers[0], "SeriesNumber"))

    @property
    def description(self) -> str:
        """SeriesDescription of the first header ('' if none)."""
        return str(header_value(self.headers[0], "SeriesDescription") or "")


@dataclass(frozen=True, eq=False)
class StudyHeaders:
    """All usable DICOM headers of one study, grouped by series, and the files left out."""

    study_instance_uid: str
    series: tuple[SeriesHeaders, ...]  # sorted by SeriesNumber, then SeriesInstanceUID
    skipped: tuple[tuple[Path, str], ...]  # (file, why it was left out)

    def reference(self) -> Dataset:
        """A header to copy patient and study attributes from (an MR image where there is one)."""
        for series in self.series:
            if str(series.headers[0].get("Modality", "")) == "MR":
                return series.headers[0]
        return self.series[0].headers[0]

    def series_by_uid(self, series_instance_uid: str) -> SeriesHeaders:
        """The series with this SeriesInstanceUID.

        Raises
        ------
        KeyError
            No series of the study has this UID.
        """
        for series in self.series:
            if series.series_instance_uid == series_instance_uid:
                return series
        raise KeyError(series_instance_uid)


def scan_study(paths: Iterable[Path]) -> StudyHeaders:
    """Read the headers of every DICOM file under ``paths`` and group them by series.

    Files are read with ``stop_before_pixels=True``. Files that are not DICOM Part 10
    (PS3.10), DICOMDIR files, files without Study/Series/SOP Instance UIDs and repeated
    SOP Instance UIDs are left out and listed in ``skipped`` with the reason.

    Parameters
    ----------
    paths
        Files and folders; folders are searched recursively. A file named twice is read once.

    Returns
    -------
    StudyHeaders
        Series sorted by SeriesNumber then UID; headers within a series sorted by
        InstanceNumber then path.

    Raises
    ------
    NotEvaluatedError
        ``no_dicom``: no usable DICOM file was found.
    PipelineError
        ``multiple_studies``: the files belong to more than one StudyInstanceUID.
    """
    skipped: list[tuple[Path, str]] = []
    by_series: dict[str, list[tuple[Dataset, Path]]] = {}
    study_uids: dict[str, int] = {}
    seen_sops: set[str] = set()
    n_files = 0
    for path in _files(paths):
        n_files += 1
        header, why = _read_header(path)
        if header is None:
            skipped.append((path, why))
            continue
        sop_uid = str(header.SOPInstanceUID)
        if sop_uid in seen_sops:
            skipped.append((path, f"duplicate SOPInstanceUID {sop_uid}"))
            continue
        seen_sops.add(sop_uid)
        study_uid = str(header.StudyInstanceUID)
        study_uids[study_uid] = study_uids.get(study_uid, 0) + 1
        by_series.setdefault(str(header.SeriesInstanceUID), []).append((header, path))

    if not by_series:
        raise NotEvaluatedError(
            "no_dicom",
            f"no usable DICOM file among {n_files} file(s) given"
            + (f" (e.g. {skipped[0][0].name}: {skipped[0][1]})" if skipped else ""),
        )
    if len(study_uids) > 1:
        listed = ", ".join(f"{uid} ({n} files)" for uid, n in sorted(study_uids.items()))
        raise PipelineError(
            "multiple_studies",
            f"the files belong to {len(study_uids)} studies ({listed}); give one study at a time",
        )

    series = [_series(uid, items) for uid, items in by_series.items()]
    series.sort(key=lambda s: (_sort_number(s.series_number), s.series_instance_uid))
    study_uid = next(iter(study_uids))
    logger.info(
        "study %s: %d series, %d headers, %d file(s) skipped",
        study_uid,
        len(series),
        len(seen_sops),
        len(skipped),
    )
    return StudyHeaders(study_uid, tuple(series), tuple(skipped))


def read_series_headers(
    series_instance_uid: str, paths: Iterable[Path], earlier: SeriesHeaders | None = None
) -> SeriesHeaders | None:
    """The headers of one series' files (read without pixel data), for a series that is still
    growing: files already in ``earlier`` are not read again. Files that cannot be used (see
    :func:`scan_study`) or belong to another series are left out; None when none is left."""
    items: list[tuple[Dataset, Path]] = []
    known: set[Path] = set()
    if earlier is not None:
        items = list(zip(earlier.headers, earlier.paths, strict=True))
        known = set(earlier.paths)
    for path in paths:
        if path in known:
            continue
        header, _ = _read_header(path)
        if header is not None and str(header.SeriesInstanceUID) == series_instance_uid:
            items.append((header, path))
    return _series(series_instance_uid, items) if items else None


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every file under ``paths`` (folders recursively, sorted), each once."""
    seen: set[Path] = set()
    for given in paths:
        given = Path(given)
        if given.is_dir():
            candidates: Iterable[Path] = _walk(given)
        else:
            candidates = (given,)
        for path in candidates:
            key = path.resolve()
            if key in seen:
                continue
            seen.add(key)
            yield path


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            yield Path(root) / name


def _read_header(path: Path) -> tuple[Dataset | None, str]:
    """The file's dataset without pixel data, or None and why it cannot be used."""
    try:
        header = dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        return None, "not a DICOM file (no DICM prefix)"
    except FileNotFoundError:
        return None, "file not found"
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as err:
        return None, f"unreadable DICOM header: {type(err).__name__}: {err}"
    meta_class = str(header.file_meta.get("MediaStorageSOPClassUID", ""))
    if meta_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in header:
        return None, "DICOMDIR (a media index, not an instance)"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not str(header.get(keyword, "") or ""):
            return None, f"no {keyword}"
    return header, ""


def _series(uid: str, items: list[tuple[Dataset, Path]]) -> SeriesHeaders:
    items.sort(
        key=lambda hp: (_sort_number(_int_or_none(header_value(hp[0], "InstanceNumber"))), hp[1])
    )
    return SeriesHeaders(
        series_instance_uid=uid,
        headers=tuple(h for h, _ in items),
        paths=tuple(p for _, p in items),
    )


def header_value(header: Dataset, keyword: str) -> Any:
    """An attribute's value, or None when it is absent or malformed (a DS that is not a number).

    pydicom converts values when they are first read; a malformed value raises there, and one
    bad attribute must not stop the whole study.
    """
    try:
        return header.get(keyword)
    except (ValueError, TypeError, OverflowError) as err:
        logger.warning(
            "instance %s: unreadable %s (%s)", header.get("SOPInstanceUID", "?"), keyword, err
        )
        return None


def _int_or_none(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def _sort_number(value: int | None) -> tuple[int, int]:
    """Sort key that puts missing numbers last."""
    return (1, 0) if value is None else (0, value)
