"""Bounds of the numbers the HTTP edge takes (job ids, limits, offsets).

A number past what the database's integer columns hold (PostgreSQL INTEGER: 2**31 - 1) would
fail in the driver with an overflow, an HTTP 500. Bounded here, it is a 422 before any query.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from storage.models import MAX_ROW_ID

MAX_PAGE = 1000

JobId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="job id")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_ROW_ID, description="rows to skip")]


class NumberOutOfRange(ValueError):  # noqa: N818 - a validation answer (422), named for it
    """A paging number that is not an integer in its range (web pages parse their own)."""


def bounded_int(name: str, text: str | None, default: int, low: int, high: int) -> int:
    """``text`` as an integer in ``[low, high]``; ``default`` when absent or empty.

    Raises
    ------
    NumberOutOfRange
        When ``text`` is not a whole number or lies outside the range.
    """
    if text is None or text.strip() == "":
        return default
    try:
        value = int(text)
    except ValueError as err:
        raise NumberOutOfRange(f"{name} must be a whole number, not {text[:32]!r}") from err
    if not low <= value <= high:
        raise NumberOutOfRange(f"{name} must be between {low} and {high}")
    return value
