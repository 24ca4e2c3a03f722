"""What every retrieval transport offers: find studies, find their series, fetch series."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pipeline.selection.prefilter import SeriesSummary

#: takes one retrieved instance as DICOM Part 10 bytes and makes it durable (the ingest path)
InstanceSink = Callable[[bytes], None]


@dataclass(frozen=True)
class StudyQuery:
    """A study-level query: one of accession number or Study Instance UID, or a date range
    (``YYYYMMDD``) with an optional Study Description pattern (``*`` and ``?`` wildcards)."""

    accession_number: str | None = None
    study_instance_uid: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    description: str | None = None
    modality: str | None = "MR"


@dataclass(frozen=True)
class StudyMatch:
    """A study the source holds (no patient identifiers but the one the patient key needs)."""

    study_instance_uid: str
    accession_number: str | None
    study_date: str | None
    study_description: str | None


@dataclass(frozen=True)
class Retrieved:
    """What one retrieval of a study's series brought."""

    completed: int
    failed: int
    warning: int = 0


class Retriever(Protocol):
    """One source, one transport. Errors are :class:`agent.errors.RetrieveError` with a code:
    ``source_unreachable``, ``query_failed``, ``move_destination_refused``,
    ``retrieve_failed``."""

    name: str

    def find_studies(self, query: StudyQuery) -> list[StudyMatch]: ...

    def find_series(self, study_instance_uid: str) -> list[SeriesSummary]: ...

    def retrieve(
        self, study_instance_uid: str, series_instance_uids: list[str], sink: InstanceSink
    ) -> Retrieved: ...
