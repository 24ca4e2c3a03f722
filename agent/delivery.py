"""Delivery of result objects to destinations (C-STORE SCU or STOW-RS): send, then record the
attempt (retries on a back-off schedule, a dead state after the last try). What the job
becomes when its deliveries settle is the lifecycle's decision (``agent.jobs.lifecycle``)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from sqlalchemy.orm import Session, sessionmaker

from agent.delivery_lanes import DeliveryLanes
from agent.errors import ExportError
from agent.jobs import lifecycle
from agent.masking import mask_url_password
from agent.metrics import Metrics
from agent.reactor_hold import reactor_held
from agent.settings import Destination, Settings
from agent.storage_commitment import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    CommitmentRequest,
    CommitmentWaiters,
    outcome_error,
)
from agent.tls import client_context
from storage import jobs
from storage.models import Delivery, DeliveryItem, DeliveryStatus, EventKind, Output, utcnow

logger = logging.getLogger(__name__)

_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"


def send_dimse(
    destination: Destination,
    files: Sequence[Path],
    *,
    calling_ae: str,
    timeout: float = 30.0,
    commitment: CommitmentRequest | None = None,
) -> list[str]:
    """C-STORE the files to a DICOM node over one association; return the SOP UIDs sent.

    ``timeout`` bounds the TCP connect, association negotiation, each DIMSE response and each
    network read. With ``commitment``, the same association then asks for storage commitment
    (:mod:`agent.storage_commitment`) and stays open until the report or its timeout.

    Raises
    ------
    ExportError
        Association refused or failed, or a C-STORE answered other than success.
    """
    if destination.ae_title is None or destination.host is None or destination.port is None:
        raise ExportError("destination_invalid", f"{destination.name} is not a DICOM node")
    datasets = [dcmread(path) for path in files]
    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        syntaxes = sorted(
            {str(ds.file_meta.TransferSyntaxUID) for ds in datasets if ds.SOPClassUID == sop_class}
            | {_EXPLICIT_LE, _IMPLICIT_LE}
        )
        ae.add_requested_context(sop_class, syntaxes)
    if commitment is not None:
        ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL, [_EXPLICIT_LE, _IMPLICIT_LE])
    tls_args = None
    if destination.tls.enabled:
        try:
            tls_args = (client_context(destination.tls), destination.host)
        except ValueError as err:
            raise ExportError("tls_config", f"{destination.name}: {err}") from err
    assoc = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        tls_args=tls_args,
        evt_handlers=commitment.handlers() if commitment is not None else None,
    )
    if not assoc.is_established:
        raise ExportError(
            "association_failed",
            f"{destination.ae_title}@{destination.host}:{destination.port} did not accept an "
            "association (down, our AE title not allowed there"
            + (", or the TLS handshake failed)" if tls_args else ")"),
        )
    sent: list[str] = []
    try:
        with reactor_held(assoc, timeout):
            for ds in datasets:
                if assoc.acse.is_aborted():  # the held reactor cannot notice it for us
                    raise ExportError(
                        "association_aborted",
                        f"{destination.ae_title} aborted the association after "
                        f"{len(sent)} of {len(datasets)} objects",
                    )
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None:
                    raise ExportError(
                        "store_no_response", f"no C-STORE response for {ds.SOPInstanceUID}"
                    )
                if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                    raise ExportError(
                        "store_refused", f"C-STORE of {ds.SOPInstanceUID} answered 0x{code:04X}"
                    )
                sent.append(str(ds.SOPInstanceUID))
        if commitment is not None:
            commitment.run(assoc)
    finally:
        if assoc.is_established:
            assoc.release()
    return sent


def send_stow(
    destination: Destination, files: Sequence[Path], *, timeout: float = 30.0
) -> list[str]:
    """STOW-RS the files (dicomweb-client); return the SOP UIDs stored.

    One HTTP request: ``timeout`` is its connect and its read timeout, and the client's own
    retries are off (the agent's retry schedule decides when to try again).
    """
    import requests
    from dicomweb_client.api import DICOMwebClient

    assert destination.stow_url
    session = requests.Session()
    if destination.token is not None:
        session.headers["Authorization"] = f"Bearer {destination.token.get_secret_value()}"
    elif destination.username is not None:
        password = destination.password.get_secret_value() if destination.password else ""
        session.auth = (destination.username, password)
    client = DICOMwebClient(url=destination.stow_url, session=session, timeout=(timeout, timeout))
    client.set_http_retry_params(retry=False)
    datasets: list[Dataset] = [dcmread(path) for path in files]
    try:
        response = client.store_instances(datasets=datasets)
    except requests.RequestException as err:
        raise ExportError(
            "stow_failed", f"STOW-RS to {mask_url_password(destination.stow_url)} failed: {err}"
        ) from err
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reasons = ", ".join(
            f"{item.get('ReferencedSOPInstanceUID', '?')}: "
            f"0x{int(item.get('FailureReason', 0)):04X}"
            for item in failed
        )
        raise ExportError("stow_refused", f"STOW-RS refused instances: {reasons}")
    return [str(ds.SOPInstanceUID) for ds in datasets]


class Deliverer:
    """Sends due deliveries and records each attempt."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        metrics: Metrics,
        lanes: DeliveryLanes | None = None,
        commitments: CommitmentWaiters | None = None,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.metrics = metrics
        #: where attempts run: a lane per destination (the service), or inline (None)
        self.lanes = lanes
        #: storage commitment transactions awaiting their report (shared with the SCP, which
        #: receives the reports a destination sends on a new association)
        self.commitments = commitments if commitments is not None else CommitmentWaiters()
        #: recorded on the deliveries this agent claims (``host:pid``)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"

    def deliver_due(self) -> int:
        """Start every delivery whose next attempt time has come; return how many.

        With lanes, each attempt is queued on its destination's lane and this returns at once;
        without, the attempts run here, one after the other.
        """
        with self.sessions.begin() as session:
            claimed = jobs.claim_due_deliveries(session, now=utcnow(), claimed_by=self.name)
        count = 0
        for delivery_id, destination in claimed:
            if self.lanes is None:
                self.attempt(delivery_id)
            elif not self.lanes.submit(destination, partial(self.attempt, delivery_id)):
                break  # stopping: claims not started go back to pending once they are stale
            count += 1
        return count

    def refresh_claims(self) -> None:
        """This agent is alive: every delivery it claimed (queued in a lane or being sent) is
        fresh again. Run every heartbeat; an agent sharing the database releases only claims
        that stopped being refreshed (their agent died)."""
        with self.sessions.begin() as session:
            jobs.refresh_delivery_claims_of(session, self.name)

    def attempt(self, delivery_id: int) -> None:
        """One attempt: send the items not yet sent; record the outcome and the next try."""
        with self.sessions() as session:
            delivery = session.get_one(Delivery, delivery_id)
            if delivery.status != DeliveryStatus.SENDING or delivery.claimed_by != self.name:
                # waited in its lane past the stale limit: another agent has it now
                logger.warning("delivery %s: no longer claimed by this agent; skipped", delivery_id)
                return
            destination = self.settings.destination(delivery.destination)
            pending = [(item.id, item.output) for item in delivery.items if item.sent_at is None]
            every = [(i.output.sop_class_uid, i.output.sop_instance_uid) for i in delivery.items]
            job_id = delivery.job_id
            newer = jobs.newer_version(session, job_id)
        if newer is not None:  # the PACS gets only the newest version's results
            with self.sessions.begin() as session:
                finished = lifecycle.supersede_delivery(session, delivery_id, newer_job_id=newer)
            logger.info("delivery %s cancelled: superseded by job %s", delivery_id, newer)
            if finished is not None:
                self.metrics.jobs_finished.labels(finished.value).inc()
            return
        error: ExportError | None = None
        sent_uids: list[str] = []
        commitment: CommitmentRequest | None = None
        resend: list[str] = []
        if destination is None:
            error = ExportError(
                "destination_unknown",
                f"destination {delivery.destination!r} is no longer in the settings",
            )
        else:
            files = [Path(output.path) for _, output in pending if output.path]
            missing = [
                o.sop_instance_uid for _, o in pending if not o.path or not Path(o.path).exists()
            ]
            if missing:
                error = ExportError("output_missing", f"result files missing: {', '.join(missing)}")
            elif files or (destination.is_dimse and destination.storage_commitment):
                # nothing left to send settles at once, unless commitment is still owed
                try:
                    timeout = self.settings.delivery.timeout_seconds
                    if destination.is_dimse:
                        if destination.storage_commitment:
                            commitment = CommitmentRequest(
                                every,
                                self.commitments,
                                self.settings.delivery.commitment_timeout_seconds,
                            )
                        sent_uids = send_dimse(
                            destination,
                            files,
                            calling_ae=self.settings.dicom.ae_title,
                            timeout=timeout,
                            commitment=commitment,
                        )
                        if commitment is not None:
                            error, resend = outcome_error(commitment, destination.name)
                    else:
                        sent_uids = send_stow(destination, files, timeout=timeout)
                except ExportError as err:
                    error = err
                except OSError as err:
                    error = ExportError("send_failed", f"{type(err).__name__}: {err}")
        self._record(delivery_id, job_id, pending, sent_uids, error, commitment, resend)

    def _record(
        self,
        delivery_id: int,
        job_id: int,
        pending: list[tuple[int, Output]],
        sent_uids: list[str],
        error: ExportError | None,
        commitment: CommitmentRequest | None = None,
        resend: Sequence[str] = (),
    ) -> None:
        now = utcnow()
        with self.sessions.begin() as session:
            delivery = session.get_one(Delivery, delivery_id)
            delivery.attempts += 1
            delivery.claimed_by = delivery.claimed_at = None
            sent = set(sent_uids)
            for item_id, output in pending:
                if output.sop_instance_uid in sent:
                    session.get_one(DeliveryItem, item_id).sent_at = now
            if resend:  # not committed: stored again at the next attempt
                for item in delivery.items:
                    if item.output.sop_instance_uid in resend:
                        item.sent_at = None
            name = delivery.destination
            if error is None:
                committed = commitment is not None
                delivery.status = DeliveryStatus.COMMITTED if committed else DeliveryStatus.DONE
                delivery.done_at = now
                delivery.last_error = None
                delivery.next_attempt_at = None
                self.metrics.delivery_attempts.labels(name, "success").inc()
                message = (
                    f"{len(pending)} objects delivered to {name} (attempt {delivery.attempts})"
                )
                data: dict[str, object] = {"destination": name, "attempt": delivery.attempts}
                if commitment is not None:
                    message += (
                        f"; storage commitment: all {len(commitment.objects)} objects "
                        f"committed (transaction {commitment.transaction_uid})"
                    )
                    data["commitment_transaction_uid"] = commitment.transaction_uid
                jobs.add_event(session, job_id, EventKind.DELIVERED, message, data)
                logger.info(
                    "job %s: delivered to %s%s", job_id, name, " (committed)" if committed else ""
                )
            else:
                self.metrics.delivery_attempts.labels(name, "failure").inc()
                self.metrics.delivery_failures.labels(name).inc()
                delivery.last_error = f"{error.code}: {error.message}"
                schedule = self.settings.delivery.retry_seconds
                if delivery.attempts <= len(schedule):
                    wait = schedule[delivery.attempts - 1]
                    delivery.status = DeliveryStatus.PENDING
                    delivery.next_attempt_at = now + dt.timedelta(seconds=wait)
                    message = f"delivery to {name} failed ({error.message}); retry in {wait:g} s"
                else:
                    delivery.status = DeliveryStatus.DEAD
                    delivery.next_attempt_at = None
                    message = (
                        f"delivery to {name} failed ({error.message}); dead after "
                        f"{delivery.attempts} attempts (`liver-agent jobs retry {job_id}`)"
                    )
                jobs.add_event(
                    session,
                    job_id,
                    EventKind.DELIVERY_FAILED,
                    message,
                    {"destination": name, "attempt": delivery.attempts, "code": error.code},
                )
                logger.warning("job %s: %s", job_id, message)
            session.flush()
            finished = lifecycle.settle_deliveries(session, job_id)
        if finished is not None:
            self.metrics.jobs_finished.labels(finished.value).inc()
