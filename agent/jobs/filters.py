"""Job list filters shared by the API, the web page and ``liver-agent jobs list``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from storage.models import MAX_ROW_ID, JobStatus


class FilterError(ValueError):
    """A filter value that cannot be understood; the message names the parameter."""


def parse_bound(name: str, value: str | None, *, upper: bool) -> dt.datetime | None:
    """Parse a date or date-time bound of ``created_at`` into an aware UTC datetime.

    A date alone (``2026-11-26``) covers that whole day: as a lower bound it means 00:00 UTC of
    that day, as an upper bound 00:00 UTC of the next day (the upper bound is exclusive).
    A date-time without a zone is taken as UTC.

    Raises
    ------
    FilterError
        The value is neither an ISO 8601 date nor a date-time.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return start + dt.timedelta(days=1) if upper else start
        moment = dt.datetime.fromisoformat(text)
    except ValueError as err:
        raise FilterError(
            f"{name}: {text!r} is not a date (2026-11-26) or date-time (2026-11-26T08:30:00Z)"
        ) from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def parse_status(value: str | None) -> JobStatus | None:
    if value is None or not value.strip():
        return None
    try:
        return JobStatus(value.strip())
    except ValueError as err:
        allowed = ", ".join(s.value for s in JobStatus)
        raise FilterError(f"status: {value!r} is not one of {allowed}") from err


@dataclass(frozen=True)
class JobQuery:
    """Filters and paging of a job list (newest first)."""

    status: JobStatus | None = None
    accession_number: str | None = None
    study_instance_uid: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None
    limit: int = 50
    offset: int = 0

    @classmethod
    def parse(
        cls,
        *,
        status: str | None = None,
        accession_number: str | None = None,
        study_instance_uid: str | None = None,
        created_from: str | None = None,
        created_to: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> JobQuery:
        """Build a query from text parameters (empty strings mean "no filter").

        Raises
        ------
        FilterError
            A status, date or paging value is invalid.
        """
        if not 1 <= limit <= 1000:
            raise FilterError(f"limit: {limit} is not between 1 and 1000")
        if not 0 <= offset <= MAX_ROW_ID:
            raise FilterError(f"offset: {offset} is not between 0 and {MAX_ROW_ID}")
        query = cls(
            status=parse_status(status),
            accession_number=(accession_number or "").strip() or None,
            study_instance_uid=(study_instance_uid or "").strip() or None,
            created_from=parse_bound("created_from", created_from, upper=False),
            created_to=parse_bound("created_to", created_to, upper=True),
            limit=limit,
            offset=offset,
        )
        if query.created_from and query.created_to and query.created_from >= query.created_to:
            raise FilterError("created_from must be before created_to")
        return query
