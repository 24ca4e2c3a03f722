"""``cohort pull``: find a cohort's studies on a source and retrieve their candidate series.

Per study: a study-level C-FIND / QIDO-RS resolves the accession number (or confirms the
Study Instance UID), a series-level one lists the series, the selection's prefilter
(:mod:`pipeline.selection.prefilter`) keeps the series that may be the axial T2 stack, and only
those are retrieved (C-MOVE to the agent's own SCP, C-GET or WADO-RS), through the same ingest
path as a pushed study. The study's Study Instance UID is recorded in ``cohort_studies``
before anything arrives, so the completion rule never makes a job of it (nothing is sent).

Resumable: a study already ``retrieved`` (or processed) is skipped; a series whose instances
are all in the spool is not fetched again; an interrupted study stays ``pending``.
"""

from __future__ import annotations

import csv
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.context import AgentContext
from agent.errors import AgentError, IngestError, RetrieveError
from agent.retrieve import Retriever, StudyQuery
from agent.retrieve.fetch import INTERRUPTED, StudyFetcher
from agent.settings import Source
from pipeline.selection import load_rules
from storage import cohorts as store
from storage.models import (
    Cohort,
    CohortStudy,
    CohortStudyStatus,
)

logger = logging.getLogger(__name__)

_ACCESSION_COLUMNS = ("accession", "accession_number", "accessionnumber")
_UID_COLUMNS = ("study_uid", "study_instance_uid", "studyinstanceuid")
#: statuses a re-run retries; the others are done with retrieval
RETRY_STATUSES = [CohortStudyStatus.PENDING, CohortStudyStatus.FAILED]


class CohortInputError(AgentError):
    """The cohort's input (CSV, query, name) cannot be used; the message says why."""


@dataclass(frozen=True)
class Outcome:
    """How one study's pull ended (for the progress display)."""

    requested: str
    status: CohortStudyStatus
    reason_code: str | None = None
    reason: str | None = None
    instances: int = 0


@dataclass
class PullSummary:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: int = 0
    interrupted: bool = False

    def count(self, status: CohortStudyStatus) -> int:
        return sum(1 for o in self.outcomes if o.status is status)


def requests_from_csv(path: Path) -> list[str]:
    """``accession:X`` / ``study:UID`` for each row of a CSV with an accession or study UID
    column (header names as in ``_ACCESSION_COLUMNS`` / ``_UID_COLUMNS``, any case)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {c.strip().lower(): c for c in reader.fieldnames or []}
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CohortInputError("csv_unreadable", f"cannot read {path}: {err}") from err
    uid_col = next((columns[c] for c in _UID_COLUMNS if c in columns), None)
    acc_col = next((columns[c] for c in _ACCESSION_COLUMNS if c in columns), None)
    if uid_col is None and acc_col is None:
        raise CohortInputError(
            "csv_no_column",
            f"{path} needs an 'accession' or a 'study_uid' column (found: "
            f"{', '.join(columns) or 'none'})",
        )
    out: list[str] = []
    for row in rows:
        uid = (row.get(uid_col) or "").strip() if uid_col else ""
        accession = (row.get(acc_col) or "").strip() if acc_col else ""
        key = f"study:{uid}" if uid else f"accession:{accession}" if accession else None
        if key and key not in out:
            out.append(key)
    if not out:
        raise CohortInputError("csv_empty", f"{path} lists no accession number or study UID")
    return out


class CohortPuller:
    """Pulls one cohort's studies from one source into the spool and the database."""

    def __init__(self, ctx: AgentContext, source: Source, retriever: Retriever) -> None:
        self.ctx = ctx
        self.source = source
        self.retriever = retriever
        self.stop = threading.Event()
        self.fetcher = StudyFetcher(
            ctx, source, retriever, load_rules(ctx.settings.pipeline.selection_rules), self.stop
        )

    # what to pull -----------------------------------------------------------------------------

    def register(
        self, name: str, *, requested: list[str] | None, query: StudyQuery | None
    ) -> list[int]:
        """Create the cohort (if new) and its rows; return the ids of rows still to pull."""
        described: dict[str, Any] = (
            {"csv": len(requested)} if requested is not None else {"query": vars(query)}
        )
        with self.ctx.sessions.begin() as session:
            cohort = store.get_or_create_cohort(
                session, name, source=self.source.name, query=described
            )
            if cohort.source != self.source.name:
                raise CohortInputError(
                    "cohort_source_mismatch",
                    f"cohort {name} was pulled from source {cohort.source}, not "
                    f"{self.source.name}: use another cohort name",
                )
            cohort_id = cohort.id
        if query is not None:
            matches = self.retriever.find_studies(query)
            requested = [f"study:{m.study_instance_uid}" for m in matches]
            logger.info("cohort %s: the query matched %d studies", name, len(matches))
        with self.ctx.sessions.begin() as session:
            cohort = session.get_one(Cohort, cohort_id)
            for key in requested or []:
                uid = key.removeprefix("study:") if key.startswith("study:") else None
                store.add_requested(session, cohort, key, study_instance_uid=uid)
            rows = store.cohort_studies(session, cohort)
            return [r.id for r in rows if r.status in RETRY_STATUSES]

    # pulling ---------------------------------------------------------------------------------

    def pull(
        self, row_ids: list[int], on_done: Callable[[Outcome], None] | None = None
    ) -> PullSummary:
        """Pull the rows, ``max_concurrent_studies`` at a time. Ctrl-C (KeyboardInterrupt)
        cancels the studies not yet started, lets those under way finish their current series,
        and returns with ``interrupted`` set: every acknowledged instance is already durable."""
        summary = PullSummary()
        pool = ThreadPoolExecutor(
            max_workers=self.source.max_concurrent_studies, thread_name_prefix="cohort-pull"
        )
        futures: dict[Future[Outcome], int] = {
            pool.submit(self.pull_one, row_id): row_id for row_id in row_ids
        }
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    self._collect(future, summary, on_done)
        except KeyboardInterrupt:
            summary.interrupted = True
            self.stop.set()
            for future in pending:
                future.cancel()
            logger.warning("interrupted: finishing the studies under way; re-run to resume")
            for future in pending:
                if not future.cancelled():
                    self._collect(future, summary, on_done)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return summary

    def _collect(
        self,
        future: Future[Outcome],
        summary: PullSummary,
        on_done: Callable[[Outcome], None] | None,
    ) -> None:
        outcome = future.result()
        summary.outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)

    def pull_one(self, row_id: int) -> Outcome:
        """Pull one study; its row ends ``retrieved`` or ``failed`` with a reason (``pending``
        if interrupted)."""
        with self.ctx.sessions() as session:
            row = session.get_one(CohortStudy, row_id)
            requested, uid = row.requested, row.study_instance_uid
        if self.stop.is_set():
            return Outcome(requested, CohortStudyStatus.PENDING, "interrupted", "not started")
        try:
            uid = self._resolve(row_id, requested)
            fetched, instances = self._retrieve(uid)
        except RetrieveError as err:
            if err.code == INTERRUPTED:  # stays pending: the next run pulls it
                return Outcome(requested, CohortStudyStatus.PENDING, err.code, err.message)
            return self._finish(row_id, requested, CohortStudyStatus.FAILED, err.code, err.message)
        except IngestError as err:
            return self._finish(row_id, requested, CohortStudyStatus.FAILED, err.code, err.message)
        return self._finish(
            row_id,
            requested,
            CohortStudyStatus.RETRIEVED,
            None,
            None,
            series_fetched=fetched,
            instances=instances,
        )

    def _finish(
        self,
        row_id: int,
        requested: str,
        status: CohortStudyStatus,
        code: str | None,
        reason: str | None,
        **values: Any,
    ) -> Outcome:
        with self.ctx.sessions.begin() as session:
            store.set_status(session, row_id, status, reason_code=code, reason=reason, **values)
        if status is CohortStudyStatus.FAILED:
            logger.warning("cohort study %s: %s (%s)", requested, reason, code)
        return Outcome(requested, status, code, reason, int(values.get("instances", 0)))

    def _resolve(self, row_id: int, requested: str) -> str:
        """The Study Instance UID of the request, confirmed on the source and recorded before
        any instance arrives (so that no job is made of it)."""
        uid, accession = self.fetcher.resolve(requested)
        with self.ctx.sessions.begin() as session:
            row = session.get_one(CohortStudy, row_id)
            row.study_instance_uid = uid
            row.accession_number = accession
        return uid

    def _retrieve(self, study_uid: str) -> tuple[int, int]:
        return self.fetcher.fetch(study_uid)


def summarise(outcomes: Iterable[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status.value] = counts.get(outcome.status.value, 0) + 1
    return counts
