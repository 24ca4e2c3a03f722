"""Ingest: the one path by which an instance enters the agent (C-STORE and STOW-RS).

Validate, write the Part 10 bytes durably to the spool, record the rows in one transaction,
and only then report success. Any failure maps to a DICOM status the sender understands.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from agent.dicom_status import StoreStatus
from agent.errors import IngestError
from agent.metrics import Metrics
from storage import queries
from storage.models import AssociationStatus
from storage.spool import InvalidUIDError, Spool, validate_uid

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """An instance that is now durable in the spool and the database."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    duplicate: bool
    size_bytes: int


def _text(ds: Dataset, keyword: str, limit: int) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value)[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


class Ingestor:
    """Takes instances in for every protocol.

    Parameters
    ----------
    spool
        Where files go.
    sessions
        Session factory of the job database.
    metrics
        Counters to move.
    min_free_bytes
        Below this much free disk in the spool, refuse with 0xA700 (out of resources).
    """

    def __init__(
        self,
        spool: Spool,
        sessions: sessionmaker[Session],
        metrics: Metrics,
        *,
        min_free_bytes: int = 0,
    ) -> None:
        self.spool = spool
        self.sessions = sessions
        self.metrics = metrics
        self.min_free_bytes = min_free_bytes
        self._db_lock = threading.Lock()

    # associations -------------------------------------------------------------------------

    def begin(self, *, calling_ae: str, called_ae: str, peer_host: str, protocol: str) -> int:
        """Record an association (or STOW request) that brings instances; return its id."""
        with self._db_lock, self.sessions.begin() as session:
            return queries.open_association(
                session,
                calling_ae=calling_ae,
                called_ae=called_ae,
                peer_host=peer_host,
                protocol=protocol,
            )

    def end(self, association_id: int, status: AssociationStatus) -> None:
        """Mark it released or aborted: its studies may now complete after the quiet period."""
        with self._db_lock, self.sessions.begin() as session:
            queries.close_association(session, association_id, status)

    # instances ----------------------------------------------------------------------------

    def store(
        self,
        part10: bytes,
        *,
        association_id: int | None,
        source_ae: str | None,
        protocol: str = "dimse",
        expected_sop_class_uid: str | None = None,
        expected_sop_instance_uid: str | None = None,
    ) -> Received:
        """Store one instance given as DICOM Part 10 bytes (preamble, file meta, data set).

        Raises
        ------
        IngestError
            With the DICOM status to answer: 0xC000 for a malformed data set or invalid UIDs,
            0xA900 when the data set does not match the request, 0xA700 when the spool or the
            database cannot take it (the sender should retry).
        """
        try:
            return self._store(
                part10,
                association_id=association_id,
                source_ae=source_ae,
                protocol=protocol,
                expected_sop_class_uid=expected_sop_class_uid,
                expected_sop_instance_uid=expected_sop_instance_uid,
            )
        except IngestError as err:
            self.metrics.instances_rejected.labels(protocol, err.code).inc()
            logger.warning(
                "refused instance from association %s: %s (%s, status 0x%04X)",
                association_id,
                err.message,
                err.code,
                err.status,
            )
            raise

    def _store(
        self,
        part10: bytes,
        *,
        association_id: int | None,
        source_ae: str | None,
        protocol: str,
        expected_sop_class_uid: str | None,
        expected_sop_instance_uid: str | None,
    ) -> Received:
        header, transfer_syntax = _read_header(part10)
        uids = {
            key: header.get(key)
            for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
        }
        try:
            relative = self.spool.relative_path(
                str(uids["StudyInstanceUID"]) if uids["StudyInstanceUID"] else "",
                str(uids["SeriesInstanceUID"]) if uids["SeriesInstanceUID"] else "",
                str(uids["SOPInstanceUID"]) if uids["SOPInstanceUID"] else "",
            )
        except InvalidUIDError as err:
            raise IngestError("invalid_uid", str(err), StoreStatus.CANNOT_UNDERSTAND) from err
        sop_uid = str(uids["SOPInstanceUID"])
        sop_class = str(uids["SOPClassUID"] or "")
        study_uid = str(uids["StudyInstanceUID"])
        if expected_sop_instance_uid is not None and sop_uid != expected_sop_instance_uid:
            raise IngestError(
                "sop_instance_mismatch",
                f"data set SOPInstanceUID {sop_uid} differs from the request's "
                f"{expected_sop_instance_uid}",
                StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            )
        if expected_sop_class_uid is not None and sop_class != expected_sop_class_uid:
            raise IngestError(
                "sop_class_mismatch",
                f"data set SOPClassUID {sop_class!r} differs from the request's "
                f"{expected_sop_class_uid}",
                StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            )
        try:
            sop_class = validate_uid("SOPClassUID", sop_class)
        except InvalidUIDError as err:
            raise IngestError("invalid_uid", str(err), StoreStatus.CANNOT_UNDERSTAND) from err

        with self._db_lock, self.sessions() as session:
            if queries.instance_exists(session, sop_uid):
                self.metrics.instances_duplicate.labels(protocol).inc()
                logger.debug("duplicate instance %s acknowledged", sop_uid)
                return Received(sop_uid, sop_class, study_uid, True, len(part10))
        if self.min_free_bytes and self.spool.free_bytes() < self.min_free_bytes:
            raise IngestError(
                "spool_full",
                f"less than {self.min_free_bytes // 2**20} MiB free in the spool",
                StoreStatus.OUT_OF_RESOURCES,
            )
        try:
            size = self.spool.write(relative, part10)
        except OSError as err:
            raise IngestError(
                "spool_write_failed",
                f"cannot write to the spool: {err}",
                StoreStatus.OUT_OF_RESOURCES,
            ) from err
        record = queries.InstanceRecord(
            study_instance_uid=study_uid,
            series_instance_uid=str(uids["SeriesInstanceUID"]),
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            transfer_syntax_uid=transfer_syntax,
            path=relative.as_posix(),
            size_bytes=size,
            accession_number=_text(header, "AccessionNumber", 16),
            study_date=_text(header, "StudyDate", 8),
            study_description=_text(header, "StudyDescription", 64),
            modality=_text(header, "Modality", 16),
            series_number=_int(header, "SeriesNumber"),
            series_description=_text(header, "SeriesDescription", 64),
        )
        duplicate = False
        try:
            with self._db_lock, self.sessions.begin() as session:
                queries.record_instance(
                    session, record, association_id=association_id, source_ae=source_ae
                )
        except IntegrityError:
            # another association stored the same SOP Instance UID between our check and now
            duplicate = True
        except (SQLAlchemyError, ValueError) as err:
            raise IngestError(
                "database_error",
                f"cannot record the instance: {err}",
                StoreStatus.OUT_OF_RESOURCES,
            ) from err
        if duplicate:
            self.metrics.instances_duplicate.labels(protocol).inc()
        else:
            self.metrics.instances_received.labels(protocol).inc()
            self.metrics.spool_bytes.inc(size)
        return Received(sop_uid, sop_class, study_uid, duplicate, size)


def _read_header(part10: bytes) -> tuple[Dataset, str]:
    """Parse the file meta and the data set up to the pixel data."""
    try:
        ds = dcmread(BytesIO(part10), stop_before_pixels=True)
        transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
        # touch the elements we need so that a malformed value fails here, not later
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
            ds.get(keyword)
    except (InvalidDicomError, AttributeError, ValueError, KeyError, EOFError, OSError) as err:
        raise IngestError(
            "malformed_dataset", f"cannot parse the data set: {err}", StoreStatus.CANNOT_UNDERSTAND
        ) from err
    return ds, transfer_syntax
