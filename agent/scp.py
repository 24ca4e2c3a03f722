"""The DICOM SCP the PACS sends to: C-ECHO and C-STORE for all storage SOP classes.

Handlers only take data in (STYLE.md, after pynetdicom's storescp): the association checks,
then :class:`agent.ingest.Ingestor` for each instance. Everything else happens elsewhere.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from agent.association_guard import NegotiationGuard
from agent.dicom_status import AssociationReject, StoreStatus
from agent.errors import IngestError
from agent.ingest import Ingestor
from agent.metrics import Metrics
from agent.settings import DicomSettings
from agent.storage_commitment import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    CommitmentWaiters,
    on_event_report,
)
from agent.tls import handshake_metric_reason, start_tls_server
from storage.models import AssociationStatus, IngestProtocol

logger = logging.getLogger(__name__)

_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"


def caller_allowed(settings: DicomSettings, calling_ae: str, host: str) -> bool:
    """Whether the allow-list (when enabled) admits this calling AE from this host."""
    if not settings.allow_list_enabled:
        return True
    return any(
        entry.ae_title == calling_ae and (entry.host is None or entry.host == host)
        for entry in settings.allowed_callers
    )


def failure_response(err: IngestError) -> Dataset:
    """The C-STORE response for a refused instance: its status, and its machine code and
    reason as Error Comment (0000,0902; LO, at most 64 characters; PS3.7 C.4.2.1.4)."""
    response = Dataset()
    response.Status = int(err.status)
    response.ErrorComment = f"{err.code}: {err.message}"[:64].replace("\\", "/")
    return response


class StorageSCP:
    """A pynetdicom server bound to the agent's AE title and port.

    Parameters
    ----------
    settings
        The ``dicom`` settings group.
    ingestor
        Takes each received instance in.
    metrics
        Counters for rejected associations.
    """

    def __init__(
        self,
        settings: DicomSettings,
        ingestor: Ingestor,
        metrics: Metrics,
        commitments: CommitmentWaiters | None = None,
    ) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.metrics = metrics
        #: storage commitment reports that destinations send back on a new association
        self.commitments = commitments
        self._server: Any = None
        self._assoc_ids: dict[int, int] = {}
        self._lock = threading.Lock()
        self.guard = NegotiationGuard(
            settings.acse_timeout,
            settings.network_timeout,
            on_timeout=lambda _peer: metrics.associations_rejected.labels(
                "negotiation_timeout"
            ).inc(),
        )
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.maximum_pdu_size = 0  # unlimited
        ae.maximum_associations = s.max_associations
        ae.require_called_aet = s.require_called_ae
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        ae.add_supported_context(Verification)
        # a destination sends its storage commitment report (N-EVENT-REPORT) as the SCP of
        # the Push Model while requesting the association: accept the roles it proposes
        ae.add_supported_context(
            STORAGE_COMMITMENT_PUSH_MODEL,
            [_EXPLICIT_LE, _IMPLICIT_LE],
            scu_role=True,
            scp_role=True,
        )
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        return ae

    @property
    def port(self) -> int:
        """The port actually bound (useful when settings ask for port 0)."""
        if self._server is None:
            return self.settings.port
        return int(self._server.server_address[1])

    def start(self) -> None:
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_opened),
            (evt.EVT_ACCEPTED, self._on_settled),
            (evt.EVT_REJECTED, self._on_settled),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            (evt.EVT_N_EVENT_REPORT, self._on_event_report),
        ]
        address = (self.settings.host, self.settings.port)
        if self.settings.tls.enabled:
            self._server = start_tls_server(
                self.ae,
                address,
                self.settings.tls,
                handlers,
                on_handshake_failed=lambda _peer, reason: self.metrics.associations_rejected.labels(
                    handshake_metric_reason(reason)
                ).inc(),
            )
        else:
            self._server = self.ae.start_server(address, block=False, evt_handlers=handlers)
        logger.info(
            "DICOM SCP %s listening on %s:%s%s",
            self.settings.ae_title,
            self.settings.host,
            self.port,
            " (TLS)" if self.settings.tls.enabled else "",
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.guard.close()

    # handlers -------------------------------------------------------------------------------

    def _on_opened(self, event: evt.Event) -> None:
        self.guard.opened(event.assoc)

    def _on_settled(self, event: evt.Event) -> None:
        self.guard.settled(event.assoc)

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title if primitive else assoc.requestor.ae_title)
        calling = calling.strip()
        host = str(assoc.requestor.address)
        if not caller_allowed(self.settings, calling, host):
            logger.warning("rejected association from %s@%s: not on the allow-list", calling, host)
            self.metrics.associations_rejected.labels("calling_ae_not_allowed").inc()
            assoc.acse.send_reject(
                AssociationReject.RESULT_PERMANENT,
                AssociationReject.SOURCE_SERVICE_USER,
                AssociationReject.DIAG_CALLING_AE_NOT_RECOGNISED,
            )
            assoc.kill()  # as pynetdicom's own rejection does: lets the DUL send the A-ASSOCIATE-RJ

    def _association_id(self, assoc: Association) -> int:
        key = id(assoc)
        with self._lock:
            found = self._assoc_ids.get(key)
        if found is not None:
            return found
        new_id = self.ingestor.begin(
            calling_ae=str(assoc.requestor.ae_title).strip(),
            called_ae=str(assoc.acceptor.ae_title).strip(),
            peer_host=str(assoc.requestor.address),
            protocol=IngestProtocol.DIMSE,
        )
        with self._lock:
            self._assoc_ids[key] = new_id
        return new_id

    def _on_store(self, event: evt.Event) -> int | Dataset:
        assoc = event.assoc
        request = cast(C_STORE, event.request)
        try:
            association_id = self._association_id(assoc)
            self.ingestor.store(
                event.encoded_dataset(include_meta=True),
                association_id=association_id,
                source_ae=str(assoc.requestor.ae_title).strip(),
                protocol=IngestProtocol.DIMSE,
                expected_sop_class_uid=str(request.AffectedSOPClassUID),
                expected_sop_instance_uid=str(request.AffectedSOPInstanceUID),
            )
        except IngestError as err:
            return failure_response(err)
        return int(StoreStatus.SUCCESS)

    def _on_event_report(self, event: evt.Event) -> tuple[int, Dataset | None]:
        if self.commitments is None:
            return 0x0112, None  # no such SOP instance: this agent asked for no commitment
        return on_event_report(event, self.commitments)

    def _finish(self, assoc: Association, status: AssociationStatus) -> None:
        with self._lock:
            association_id = self._assoc_ids.pop(id(assoc), None)
        if association_id is None:
            return
        self.ingestor.end(association_id, status)

    def _on_released(self, event: evt.Event) -> None:
        self._finish(event.assoc, AssociationStatus.RELEASED)

    def _on_aborted(self, event: evt.Event) -> None:
        self._finish(event.assoc, AssociationStatus.ABORTED)

    def _on_closed(self, event: evt.Event) -> None:
        # connection closed without release or abort (peer vanished)
        self.guard.settled(event.assoc)
        self._finish(event.assoc, AssociationStatus.ABORTED)
