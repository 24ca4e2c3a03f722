"""Storage commitment without a network: the report parsed from an N-EVENT-REPORT, what it
means for the delivery, the waiters across threads, and the setting's rules. (Against a real
Orthanc: tests/integration/test_storage_commitment.py.)"""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset

from agent.settings import load_settings
from agent.storage_commitment import (
    CommitmentReport,
    CommitmentRequest,
    CommitmentWaiters,
    commitment_request,
    outcome_error,
    parse_report,
)

SEG, SR = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"


def _info(uid: str, ok: list[str], failed: dict[str, int]) -> Dataset:
    info = commitment_request(uid, [(SEG, u) for u in ok])
    items = []
    for sop, reason in failed.items():
        item = Dataset()
        item.ReferencedSOPClassUID = SR
        item.ReferencedSOPInstanceUID = sop
        item.FailureReason = reason
        items.append(item)
    if items:
        info.FailedSOPSequence = items
    return info


def test_the_request_lists_every_object_under_its_transaction() -> None:
    ds = commitment_request("2.25.1", [(SEG, "1.1"), (SR, "1.2")])
    assert ds.TransactionUID == "2.25.1"
    assert [
        (i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in ds.ReferencedSOPSequence
    ] == [
        (SEG, "1.1"),
        (SR, "1.2"),
    ]


def test_a_report_says_what_was_committed_and_what_failed() -> None:
    report = parse_report(2, _info("2.25.7", ["1.1"], {"1.2": 0x0112}))
    assert report == CommitmentReport("2.25.7", frozenset({"1.1"}), {"1.2": 0x0112})
    assert report.missing(["1.1", "1.2", "1.3"]) == ["1.2", "1.3"]
    with pytest.raises(ValueError, match="Transaction UID"):
        parse_report(1, Dataset())
    with pytest.raises(ValueError, match="Event Type ID 3"):
        parse_report(3, _info("2.25.7", ["1.1"], {}))


def test_the_outcome_of_a_request() -> None:
    waiters = CommitmentWaiters()
    request = CommitmentRequest([(SEG, "1.1"), (SR, "1.2")], waiters, timeout=2.5)
    error, resend = outcome_error(request, "pacs")
    assert error is not None
    assert error.code == "commitment_timeout"
    assert "within 2.5 s" in error.message
    assert resend == []

    request.report = CommitmentReport(request.transaction_uid, frozenset({"1.1"}), {"1.2": 0x0112})
    error, resend = outcome_error(request, "pacs")
    assert error is not None
    assert error.code == "commitment_failed"
    assert "did not commit 1 of 2 objects: 1.2 (no such object instance)" in error.message
    assert resend == ["1.2"]

    request.report = CommitmentReport(request.transaction_uid, frozenset({"1.1", "1.2"}))
    assert outcome_error(request, "pacs") == (None, [])


def test_a_report_reaches_the_thread_that_waits_for_it_and_a_late_one_nobody() -> None:
    waiters = CommitmentWaiters()
    waiters.expect("2.25.9")
    report = CommitmentReport("2.25.9", frozenset({"1.1"}))
    sender = threading.Timer(0.05, waiters.deliver, [report])
    sender.start()
    assert waiters.wait("2.25.9", 5.0) == report
    assert waiters.pending() == 0
    assert waiters.deliver(report) is False  # late: nobody waits any more
    waiters.expect("2.25.10")
    assert waiters.wait("2.25.10", 0.01) is None
    assert waiters.pending() == 0


def test_storage_commitment_is_for_dicom_nodes_and_off_by_default() -> None:
    settings = load_settings(
        None, destinations=[{"name": "pacs", "ae_title": "PACS", "host": "h", "port": 104}]
    )
    assert settings.destinations[0].storage_commitment is False
    assert settings.delivery.commitment_timeout_seconds == 60.0
    with pytest.raises(ValidationError, match="storage_commitment is for DICOM nodes"):
        load_settings(
            None,
            destinations=[
                {"name": "web", "stow_url": "http://x/dicom-web", "storage_commitment": True}
            ],
        )
