"""Proof of delivery: DICOM Storage Commitment Push Model as SCU (PS3.4 Annex J).

After the C-STOREs of a delivery, the agent asks the destination to commit every object of it
(N-ACTION, Action Type 1 "Request Storage Commitment", on the well-known SOP instance) under a
fresh Transaction UID. The destination answers with an N-EVENT-REPORT (Event Type 1: all
committed; 2: failures exist) either on the same association, while it is still open, or on a
new association it opens to the agent's SCP (Orthanc does this: the agent must then be one of
its ``DicomModalities``). :class:`CommitmentWaiters` joins the two: the delivery lane that asked
waits on it, and whichever association carries the report hands it over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt
from pynetdicom.association import Association

from agent.errors import ExportError
from agent.reactor_hold import reactor_held

logger = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
#: the well-known SOP Instance of the Push Model (PS3.4 J.3.5)
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1
"""N-ACTION Action Type ID (PS3.4 J.3.2)."""
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES_EXIST = 2
"""N-EVENT-REPORT Event Type IDs (PS3.4 J.3.3)."""

#: Failure Reason (0008,1197) values the standard names (PS3.3 C.14.1.1)
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0213: "resource limitation",
    0x0122: "referenced SOP class not supported",
    0x0119: "class / instance conflict",
    0x0131: "duplicate transaction UID",
}

_SUCCESS = 0x0000
_PROCESSING_FAILURE = 0x0110


@dataclass(frozen=True)
class CommitmentReport:
    """What a destination said about one transaction: the SOP Instance UIDs it committed and
    those it did not, with their Failure Reason."""

    transaction_uid: str
    committed: frozenset[str]
    failed: dict[str, int] = field(default_factory=dict)

    def missing(self, asked: Sequence[str]) -> list[str]:
        """The asked instances that are not reported committed (failed, or left out)."""
        return [uid for uid in asked if uid not in self.committed or uid in self.failed]


class CommitmentWaiters:
    """Transactions waiting for their N-EVENT-REPORT, shared by the delivery lanes (who wait)
    and the associations that carry reports (the agent's SCP, or the delivery's own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._reports: dict[str, CommitmentReport] = {}

    def expect(self, transaction_uid: str) -> None:
        """Register a transaction before its N-ACTION goes out (a report may come at once)."""
        with self._lock:
            self._events[transaction_uid] = threading.Event()

    def deliver(self, report: CommitmentReport) -> bool:
        """Hand a received report to its waiter; False when nobody waits for it (unknown
        transaction, or the waiter timed out)."""
        with self._lock:
            event = self._events.get(report.transaction_uid)
            if event is None:
                return False
            self._reports[report.transaction_uid] = report
        event.set()
        return True

    def wait(self, transaction_uid: str, timeout: float) -> CommitmentReport | None:
        """The transaction's report, or None after ``timeout`` seconds; forgets it either way."""
        with self._lock:
            event = self._events.get(transaction_uid)
        if event is not None:
            event.wait(timeout)
        with self._lock:
            self._events.pop(transaction_uid, None)
            return self._reports.pop(transaction_uid, None)

    def pending(self) -> int:
        with self._lock:
            return len(self._events)


def commitment_request(transaction_uid: str, objects: Sequence[tuple[str, str]]) -> Dataset:
    """The N-ACTION Action Information: Transaction UID and the Referenced SOP Sequence of
    (SOP Class UID, SOP Instance UID) pairs (PS3.4 J.3.2.1.1)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in objects:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def parse_report(event_type_id: int | None, info: Dataset) -> CommitmentReport:
    """A report from an N-EVENT-REPORT's Event Information (PS3.4 J.3.3.1.1).

    Raises
    ------
    ValueError
        No Transaction UID, or an Event Type other than 1 or 2.
    """
    uid = str(info.get("TransactionUID", "") or "")
    if not uid:
        raise ValueError("the storage commitment report has no Transaction UID")
    if event_type_id not in (EVENT_ALL_COMMITTED, EVENT_FAILURES_EXIST):
        raise ValueError(f"Event Type ID {event_type_id} is not a storage commitment result")
    committed = frozenset(
        str(item.ReferencedSOPInstanceUID)
        for item in info.get("ReferencedSOPSequence", [])
        if "ReferencedSOPInstanceUID" in item
    )
    failed = {
        str(item.ReferencedSOPInstanceUID): int(item.get("FailureReason", _PROCESSING_FAILURE))
        for item in info.get("FailedSOPSequence", [])
        if "ReferencedSOPInstanceUID" in item
    }
    return CommitmentReport(uid, committed, failed)


def on_event_report(event: evt.Event, waiters: CommitmentWaiters) -> tuple[int, Dataset | None]:
    """``EVT_N_EVENT_REPORT`` handler: take a storage commitment result in and answer it.

    A report nobody waits for (late, or unknown) is still answered Success - the destination
    did its part - and logged; the delivery that timed out asks again at its next attempt.
    """
    request: Any = event.request
    if str(request.AffectedSOPClassUID) != STORAGE_COMMITMENT_PUSH_MODEL:
        return 0x0112, None  # no such SOP instance: we take no other event reports
    try:
        report = parse_report(request.EventTypeID, event.event_information)
    except (ValueError, AttributeError, TypeError) as err:
        logger.warning("storage commitment report refused: %s", err)
        return _PROCESSING_FAILURE, None
    if waiters.deliver(report):
        logger.info(
            "storage commitment report for transaction %s: %s committed, %s failed",
            report.transaction_uid,
            len(report.committed),
            len(report.failed),
        )
    else:
        logger.warning(
            "storage commitment report for transaction %s that no delivery waits for "
            "(late or unknown); ignored",
            report.transaction_uid,
        )
    return _SUCCESS, None


@dataclass
class CommitmentRequest:
    """One delivery's request: every object of the delivery, and where the answer arrives.

    :meth:`run` is called on the delivery's association after its C-STOREs; it leaves the
    outcome in :attr:`report` (None: no report within ``timeout``).
    """

    objects: Sequence[tuple[str, str]]
    waiters: CommitmentWaiters
    timeout: float
    transaction_uid: str = field(default_factory=lambda: str(generate_uid()))
    report: CommitmentReport | None = None
    refused: str | None = None

    def handlers(self) -> list[Any]:
        """Handlers for the delivery's own association (a report on the same association)."""
        return [(evt.EVT_N_EVENT_REPORT, on_event_report, [self.waiters])]

    def run(self, assoc: Association) -> None:
        """Send the N-ACTION, then wait for the report with the association still open.

        Never raises for the destination's answer: a refusal is kept in :attr:`refused`
        (the objects were stored all the same) and :func:`outcome_error` reports it.
        """
        self.waiters.expect(self.transaction_uid)
        try:
            with reactor_held(assoc):
                status, _ = assoc.send_n_action(
                    commitment_request(self.transaction_uid, self.objects),
                    REQUEST_STORAGE_COMMITMENT,
                    STORAGE_COMMITMENT_PUSH_MODEL,
                    STORAGE_COMMITMENT_INSTANCE,
                )
        except ValueError as err:  # pynetdicom: no accepted presentation context
            self.waiters.wait(self.transaction_uid, 0)
            self.refused = f"the destination does not accept Storage Commitment ({err})"
            return
        code = getattr(status, "Status", None)
        if code != _SUCCESS:
            self.waiters.wait(self.transaction_uid, 0)
            self.refused = (
                "the destination ended the association without answering the storage "
                "commitment request (Orthanc does so when the agent's AE title is not among "
                "its DicomModalities)"
                if code is None
                else f"the storage commitment request was answered 0x{code:04X}"
            )
            return
        self.report = self.waiters.wait(self.transaction_uid, self.timeout)


def outcome_error(
    request: CommitmentRequest, destination: str
) -> tuple[ExportError | None, list[str]]:
    """What a finished request means for the delivery: (None, []) when every object was
    committed, else the error and the SOP Instance UIDs to send again."""
    asked = [uid for _, uid in request.objects]
    report = request.report
    if request.refused is not None:
        return ExportError("commitment_refused", f"{destination}: {request.refused}"), []
    if report is None:
        return (
            ExportError(
                "commitment_timeout",
                f"no storage commitment report from {destination} within "
                f"{request.timeout:g} s (transaction {request.transaction_uid}); the objects "
                "were stored but not confirmed",
            ),
            [],
        )
    missing = report.missing(asked)
    if not missing:
        return None, []
    reasons = ", ".join(
        f"{uid} ({FAILURE_REASONS.get(report.failed[uid], hex(report.failed[uid]))})"
        if uid in report.failed
        else f"{uid} (not in the report)"
        for uid in missing[:5]
    )
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return (
        ExportError(
            "commitment_failed",
            f"{destination} did not commit {len(missing)} of {len(asked)} objects: {reasons}{more}",
        ),
        missing,
    )
