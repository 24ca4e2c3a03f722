"""Radiologist feedback on a job's finding: agree or disagree (and "wrong slice" / "wrong
outline"), a comment, who and when; kept append-only (``storage.feedback``). The newest verdict
of a job is the one in force; monitoring compares findings with it (``agent.monitoring``).

Labels from reports come in as a CSV of ``accession,finding`` (0/1) and are recorded as from
the user ``report import``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.orm import Session

from agent.errors import AgentError
from storage import feedback as store
from storage.models import Feedback, Job

#: the finding a job's label means positive (``pipeline.results``: "cirrhosis" / "no cirrhosis")
POSITIVE_LABEL = "cirrhosis"
REPORT_IMPORT_USER = "report import"
MAX_COMMENT = 2000


class FeedbackSource(StrEnum):
    WEB = "web"
    API = "api"
    IMPORT = "import"


class FeedbackError(AgentError):
    """Feedback that cannot be recorded: ``job_not_found``, ``no_finding``,
    ``comment_too_long``, ``labels_invalid`` (a CSV import; the message lists every bad line)."""


@dataclass(frozen=True)
class FeedbackView:
    """One verdict as the API and the page show it."""

    id: int
    job_id: int
    agree: bool
    reference_positive: bool
    wrong_slice: bool
    wrong_outline: bool
    comment: str | None
    user: str
    source: str
    at: dt.datetime

    @classmethod
    def of(cls, row: Feedback) -> FeedbackView:
        return cls(
            id=row.id,
            job_id=row.job_id,
            agree=row.agree,
            reference_positive=row.reference_positive,
            wrong_slice=row.wrong_slice,
            wrong_outline=row.wrong_outline,
            comment=row.comment,
            user=row.user,
            source=row.source,
            at=row.at,
        )


def is_positive(job: Job) -> bool | None:
    """The job's finding as positive (True) / negative (False); None without a finding."""
    if job.label is None:
        return None
    return job.label == POSITIVE_LABEL


def record_feedback(
    session: Session,
    job_id: int,
    *,
    agree: bool,
    user: str,
    source: FeedbackSource,
    wrong_slice: bool = False,
    wrong_outline: bool = False,
    comment: str | None = None,
) -> FeedbackView:
    """Append a verdict on the finding of job ``job_id``.

    Raises
    ------
    FeedbackError
        ``job_not_found``; ``no_finding`` when the job has no finding to agree with (not run,
        not evaluated, withheld); ``comment_too_long``.
    """
    job = session.get(Job, job_id)
    if job is None:
        raise FeedbackError("job_not_found", f"no job {job_id}")
    predicted = is_positive(job)
    if predicted is None:
        raise FeedbackError(
            "no_finding",
            f"job {job_id} has no finding to agree or disagree with (status {job.status})",
        )
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > MAX_COMMENT:
        raise FeedbackError("comment_too_long", f"a comment is at most {MAX_COMMENT} characters")
    row = store.add_feedback(
        session,
        job_id=job_id,
        agree=agree,
        reference_positive=predicted if agree else not predicted,
        wrong_slice=wrong_slice,
        wrong_outline=wrong_outline,
        comment=comment,
        user=user,
        source=source.value,
    )
    return FeedbackView.of(row)


def job_feedback(session: Session, job_id: int) -> list[FeedbackView]:
    """Every verdict on a job, newest first."""
    return [FeedbackView.of(r) for r in store.feedback_of_job(session, job_id)]


@dataclass(frozen=True)
class ImportedLabel:
    line: int
    accession_number: str
    job_id: int
    reference_positive: bool
    agree: bool


_ACCESSION_COLUMNS = ("accession", "accession_number", "accessionnumber")
_FINDING_COLUMNS = ("finding", "label", "cirrhosis")


def import_labels(session: Session, text: str) -> list[ImportedLabel]:
    """Record labels from reports: a CSV with a header ``accession,finding`` (finding ``1``:
    cirrhosis, ``0``: none), one row per study. Each label becomes a verdict on the newest job
    of that accession that has a finding, from the user ``report import``. All or nothing.

    Raises
    ------
    FeedbackError
        ``labels_invalid`` listing every bad line: a missing column, an empty or unknown
        accession, a finding that is not 0 or 1, an accession without a job with a finding.
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    rows = list(reader)
    if not rows:
        raise FeedbackError(
            "labels_invalid", "the CSV is empty (expected a header accession,finding)"
        )
    header = [h.strip().lower() for h in rows[0]]
    acc_col = next((header.index(c) for c in _ACCESSION_COLUMNS if c in header), None)
    find_col = next((header.index(c) for c in _FINDING_COLUMNS if c in header), None)
    if acc_col is None or find_col is None:
        raise FeedbackError(
            "labels_invalid",
            f"line 1: the header must name the columns 'accession' and 'finding', not {rows[0]}",
        )
    problems: list[str] = []
    labels: list[ImportedLabel] = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(acc_col, find_col):
            problems.append(f"line {number}: expected {len(header)} columns, found {len(row)}")
            continue
        accession, finding = row[acc_col].strip(), row[find_col].strip()
        if not accession:
            problems.append(f"line {number}: the accession is empty")
            continue
        if finding not in ("0", "1"):
            problems.append(
                f"line {number}: accession {accession}: the finding must be 0 or 1, not {finding!r}"
            )
            continue
        job = store.newest_job_with_finding(session, accession)
        if job is None:
            if store.accession_known(session, accession):
                problems.append(
                    f"line {number}: accession {accession}: no job of it has a finding yet"
                )
            else:
                problems.append(f"line {number}: unknown accession {accession}")
            continue
        truth = finding == "1"
        labels.append(
            ImportedLabel(
                line=number,
                accession_number=accession,
                job_id=job.id,
                reference_positive=truth,
                agree=truth == is_positive(job),
            )
        )
    if problems:
        raise FeedbackError(
            "labels_invalid",
            f"{len(problems)} bad line(s), nothing imported:\n" + "\n".join(problems),
        )
    for label in labels:
        store.add_feedback(
            session,
            job_id=label.job_id,
            agree=label.agree,
            reference_positive=label.reference_positive,
            user=REPORT_IMPORT_USER,
            source=FeedbackSource.IMPORT.value,
        )
    return labels
