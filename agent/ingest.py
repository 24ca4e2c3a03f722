"""Ingest: the one path by which an instance enters the agent (C-STORE and STOW-RS).

Validate, write the Part 10 bytes durably to the spool, record the rows in one transaction,
and only then report success. Any failure maps to a DICOM status the sender understands.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from agent.dataset_check import check_complete
from agent.dicom_status import StoreStatus
from agent.errors import IngestError
from agent.metrics import Metrics
from storage import queries
from storage.models import AssociationStatus, IngestProtocol
from storage.spool import InvalidUIDError, Spool, StagedFile, validate_uid

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


@dataclass(frozen=True)
class _Checked:
    """A parsed instance whose UIDs passed the checks."""

    header: Dataset
    transfer_syntax: str
    relative: Path
    uids: dict[str, str]


@dataclass(frozen=True)
class _Lookup:
    """What the database held for a batch: recorded files by SOP Instance UID (path, size),
    and the study of each recorded series."""

    files: dict[str, tuple[str, int]]
    owners: dict[str, str]


@dataclass(eq=False)
class _Pending:
    """One staged instance waiting for the group commit."""

    staged: StagedFile
    record: queries.InstanceRecord
    association_id: int | None
    source_ae: str | None
    done: bool = False  # committed or failed: set by the leader under the condition's lock
    duplicate: bool = False
    error: IngestError | None = None
    published: bool = False  # renamed into place
    replaced: bool = False  # ... over a file that was there before (kept if this one fails)
    stray: bool = False  # a duplicate whose recorded copy lives under another path


class Ingestor:
    """Takes instances in for every protocol.

    Each instance is parsed and written under a temporary name by the calling thread (one
    per association). Then one of the waiting threads, the leader, takes every instance
    waiting, renames the files into place, records the rows in one transaction and makes both
    durable with one flush of the file system (:meth:`storage.spool.Spool.barrier`) before any
    of them is acknowledged; the others wait for it, and one of those still waiting leads the
    next batch. Concurrent associations share flushes (group commit), and a lone association
    commits on its own thread, without a hand-over to another thread.

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
    durable_paths
        Other files to flush at each barrier: the SQLite write-ahead log, whose commits are
        not flushed by SQLite itself with ``synchronous=NORMAL``.
    """

    def __init__(
        self,
        spool: Spool,
        sessions: sessionmaker[Session],
        metrics: Metrics,
        *,
        min_free_bytes: int = 0,
        durable_paths: tuple[Path, ...] = (),
    ) -> None:
        self.spool = spool
        self.sessions = sessions
        self.metrics = metrics
        self.min_free_bytes = min_free_bytes
        self.durable_paths = durable_paths
        self._queue: list[_Pending] = []
        self._cond = threading.Condition()
        self._leading = False  # a thread is committing a batch
        self._closed = False
        #: called after an association or STOW request ended (the service schedules the
        #: completion check for the end of the quiet period)
        self.on_association_end: Callable[[], None] | None = None

    # associations -------------------------------------------------------------------------

    def begin(
        self, *, calling_ae: str, called_ae: str, peer_host: str, protocol: IngestProtocol
    ) -> int:
        """Record an association (or STOW request) that brings instances; return its id."""
        with self.sessions.begin() as session:
            return queries.open_association(
                session,
                calling_ae=calling_ae,
                called_ae=called_ae,
                peer_host=peer_host,
                protocol=protocol,
            )

    def end(self, association_id: int, status: AssociationStatus) -> None:
        """Mark it released or aborted: its studies may now complete after the quiet period."""
        with self.sessions.begin() as session:
            queries.close_association(session, association_id, status)
        if self.on_association_end is not None:
            self.on_association_end()

    def close(self) -> None:
        """Refuse new instances; return once the batch being committed, if any, is done."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._leading, timeout=30)

    # instances ----------------------------------------------------------------------------

    def store(
        self,
        part10: bytes,
        *,
        association_id: int | None,
        source_ae: str | None,
        protocol: IngestProtocol = IngestProtocol.DIMSE,
        expected_sop_class_uid: str | None = None,
        expected_sop_instance_uid: str | None = None,
    ) -> Received:
        """Store one instance given as DICOM Part 10 bytes (preamble, file meta, data set).

        Returns once the file and its rows are durable.

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
            self._refused(err, association_id, protocol)
            raise

    def _store(
        self,
        part10: bytes,
        *,
        association_id: int | None,
        source_ae: str | None,
        protocol: IngestProtocol,
        expected_sop_class_uid: str | None,
        expected_sop_instance_uid: str | None,
    ) -> Received:
        checked = self._check(
            part10,
            expected_sop_class_uid=expected_sop_class_uid,
            expected_sop_instance_uid=expected_sop_instance_uid,
        )
        prepared = self._stage(
            checked, part10, association_id=association_id, source_ae=source_ae, protocol=protocol
        )
        if isinstance(prepared, Received):
            return prepared
        self._submit([prepared])
        return self._outcome(prepared, protocol)

    def store_batch(
        self,
        items: list[tuple[bytes, Path | None]],
        *,
        protocol: IngestProtocol,
        source_ae: str | None = None,
    ) -> list[Received | IngestError]:
        """Store many instances at once (the native front end's received files): each is
        checked as by :meth:`store`, then all are committed together, their rows recorded
        with one statement per study, series and batch (``storage.queries.record_instances``).

        ``items``: the Part 10 bytes and, where the bytes are already a file on the spool's
        file system, its path: that file is linked into place instead of written again (the
        caller removes it once this returns). Returns each instance's outcome, in order: the
        instance, or the :class:`IngestError` :meth:`store` would have raised.
        """
        checked: list[_Checked | IngestError] = []
        for part10, _source in items:
            try:
                checked.append(
                    self._check(part10, expected_sop_class_uid=None, expected_sop_instance_uid=None)
                )
            except IngestError as err:
                checked.append(err)
        lookup = self._look_up([c for c in checked if isinstance(c, _Checked)])
        outcomes: list[Received | IngestError | _Pending] = []
        for (part10, source), check in zip(items, checked, strict=True):
            try:
                if isinstance(check, IngestError):
                    raise check
                outcomes.append(
                    self._stage(
                        check,
                        part10,
                        association_id=None,
                        source_ae=source_ae,
                        protocol=protocol,
                        link_from=source,
                        lookup=lookup,
                    )
                )
            except IngestError as err:
                self._refused(err, None, protocol)
                outcomes.append(err)
        pending = [o for o in outcomes if isinstance(o, _Pending)]
        if pending:
            self._submit(pending)
        results: list[Received | IngestError] = []
        for outcome in outcomes:
            if isinstance(outcome, _Pending):
                try:
                    results.append(self._outcome(outcome, protocol))
                except IngestError as err:
                    self._refused(err, None, protocol)
                    results.append(err)
            else:
                results.append(outcome)
        return results

    def _look_up(self, checked: list[_Checked]) -> _Lookup | None:
        """What the database holds of a batch's instances and series, in two queries (None:
        the database cannot say now; each instance then asks alone)."""
        if not checked:
            return None
        try:
            with self.sessions() as session:
                files, owners = queries.known_files_and_series(
                    session,
                    [c.uids["SOPInstanceUID"] for c in checked],
                    [c.uids["SeriesInstanceUID"] for c in checked],
                )
        except SQLAlchemyError:
            return None
        return _Lookup(files, owners)

    def _refused(self, err: IngestError, association_id: int | None, protocol: str) -> None:
        self.metrics.instances_rejected.labels(protocol, err.code).inc()
        logger.warning(
            "refused instance from association %s: %s (%s, status 0x%04X)",
            association_id,
            err.message,
            err.code,
            err.status,
        )

    def _outcome(self, pending: _Pending, protocol: str) -> Received:
        """After the commit: the instance, or raise its error."""
        if pending.error is not None:
            raise pending.error
        if pending.duplicate:
            self.metrics.instances_duplicate.labels(protocol).inc()
        else:
            self.metrics.instances_received.labels(protocol).inc()
        record = pending.record
        return Received(
            record.sop_instance_uid,
            record.sop_class_uid,
            record.study_instance_uid,
            pending.duplicate,
            pending.staged.size,
        )

    def _check(
        self,
        part10: bytes,
        *,
        expected_sop_class_uid: str | None,
        expected_sop_instance_uid: str | None,
    ) -> _Checked:
        """Parse and check one instance (nothing written, nothing looked up)."""
        header, transfer_syntax = _read_header(part10)
        uids = {
            key: str(header.get(key) or "")
            for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
        }
        try:
            relative = self.spool.relative_path(
                uids["StudyInstanceUID"], uids["SeriesInstanceUID"], uids["SOPInstanceUID"]
            )
        except InvalidUIDError as err:
            raise IngestError("invalid_uid", str(err), StoreStatus.CANNOT_UNDERSTAND) from err
        sop_uid = uids["SOPInstanceUID"]
        sop_class = uids["SOPClassUID"]
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
            validate_uid("SOPClassUID", sop_class)
        except InvalidUIDError as err:
            raise IngestError("invalid_uid", str(err), StoreStatus.CANNOT_UNDERSTAND) from err
        return _Checked(header, transfer_syntax, relative, uids)

    def _stage(
        self,
        checked: _Checked,
        part10: bytes,
        *,
        association_id: int | None,
        source_ae: str | None,
        protocol: IngestProtocol,
        link_from: Path | None = None,
        lookup: _Lookup | None = None,
    ) -> _Pending | Received:
        """The duplicate and space checks, then the file staged for the commit."""
        header, transfer_syntax, relative, uids = (
            checked.header,
            checked.transfer_syntax,
            checked.relative,
            checked.uids,
        )
        sop_uid = uids["SOPInstanceUID"]
        sop_class = uids["SOPClassUID"]
        study_uid = uids["StudyInstanceUID"]
        if self._already_stored(sop_uid, uids["SeriesInstanceUID"], study_uid, lookup):
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
            staged = (
                self.spool.stage(relative, part10)
                if link_from is None
                else self.spool.stage_link(relative, link_from, part10)
            )
        except OSError as err:
            raise IngestError(
                "spool_write_failed",
                f"cannot write to the spool: {err}",
                StoreStatus.OUT_OF_RESOURCES,
            ) from err
        record = queries.InstanceRecord(
            study_instance_uid=study_uid,
            series_instance_uid=uids["SeriesInstanceUID"],
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            transfer_syntax_uid=transfer_syntax,
            path=relative.as_posix(),
            size_bytes=staged.size,
            accession_number=_text(header, "AccessionNumber", 16),
            study_date=_text(header, "StudyDate", 8),
            study_description=_text(header, "StudyDescription", 64),
            modality=_text(header, "Modality", 16),
            series_number=_int(header, "SeriesNumber"),
            series_description=_text(header, "SeriesDescription", 64),
        )
        return _Pending(staged, record, association_id, source_ae)

    def _already_stored(
        self, sop_uid: str, series_uid: str, study_uid: str, lookup: _Lookup | None = None
    ) -> bool:
        """A duplicate is acknowledged without a write only if its file is really there.

        ``lookup``: what the database held for a whole batch, read at once.

        Raises
        ------
        IngestError
            ``series_in_other_study`` (0xC000) when the database holds the series under another
            study: refused before anything is written (the same check runs again, race-free,
            when the rows are recorded).
        """
        if lookup is not None:
            owner = lookup.owners.get(series_uid)
            known = lookup.files.get(sop_uid)
            if owner is not None and owner != study_uid:
                raise _series_in_other_study(series_uid, study_uid)
        else:
            with self.sessions() as session:
                owner = queries.study_of_series(session, series_uid)
                if owner is not None and owner != study_uid:
                    raise _series_in_other_study(series_uid, study_uid)
                known = queries.instance_file(session, sop_uid)
        if known is None:
            return False
        path, size = known
        try:
            return self.spool.path_of(path).stat().st_size == size
        except OSError:
            logger.warning("instance %s is recorded but its file is missing: rewriting", sop_uid)
            return False

    # group commit -------------------------------------------------------------------------

    def _submit(self, pending: list[_Pending]) -> None:
        """Queue ``pending`` and return once the batches holding them are committed (or
        failed): one of the waiting threads leads each batch."""
        with self._cond:
            if self._closed:
                for item in pending:
                    self.spool.discard(item.staged)
                    item.error = IngestError(
                        "shutting_down", "the agent is stopping", StoreStatus.OUT_OF_RESOURCES
                    )
                    item.done = True
                return
            self._queue.extend(pending)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: all(item.done for item in pending) or not self._leading)
                if all(item.done for item in pending):
                    return
                # no one is committing: lead; the queue holds ours and whoever came since
                self._leading = True
                batch, self._queue = self._queue, []
            self._lead(batch)

    def _lead(self, batch: list[_Pending]) -> None:
        try:
            self._commit(batch)
        except Exception as err:  # a bug must not leave the others waiting: refuse, go on
            logger.exception("ingest commit failed")
            for item in batch:
                item.error = item.error or IngestError(
                    "internal_error",
                    f"{type(err).__name__}: {err}",
                    StoreStatus.OUT_OF_RESOURCES,
                )
        finally:  # only now may the waiting handlers answer
            with self._cond:
                for item in batch:
                    item.done = True
                self._leading = False
                self._cond.notify_all()

    def _commit(self, batch: list[_Pending]) -> None:
        ready = []
        for pending in batch:
            try:
                pending.replaced = pending.staged.target.exists()
                self.spool.publish(pending.staged)
                pending.published = True
                ready.append(pending)
            except OSError as err:
                pending.error = IngestError(
                    "spool_write_failed",
                    f"cannot write to the spool: {err}",
                    StoreStatus.OUT_OF_RESOURCES,
                )
        self._record(ready)
        self._remove_unrecorded(ready)
        try:
            self.spool.barrier(
                [p.staged.target for p in ready if p.error is None], self.durable_paths
            )
        except OSError as err:
            for pending in ready:
                pending.error = pending.error or IngestError(
                    "flush_failed",
                    f"cannot flush the spool to disk: {err}",
                    StoreStatus.OUT_OF_RESOURCES,
                )

    def _record(self, batch: list[_Pending]) -> None:
        """Record the rows of a batch in one transaction (a savepoint for each instance)."""
        if not batch:
            return
        try:
            with self.sessions.begin() as session:
                # receivers sharing a PostgreSQL database lock a study while they record it:
                # every study of the batch first, in study order, so that the grouped and the
                # one-by-one recording below never take two locks in another order
                queries.lock_studies(session, (p.record.study_instance_uid for p in batch))
                rest = self._record_grouped(session, batch)
                for pending in sorted(rest, key=lambda p: p.record.study_instance_uid):
                    try:
                        with session.begin_nested():
                            queries.record_instance(
                                session,
                                pending.record,
                                association_id=pending.association_id,
                                source_ae=pending.source_ae,
                            )
                    except IntegrityError:
                        # another association stored the same SOP Instance UID meanwhile
                        pending.duplicate = True
                        known = queries.instance_file(session, pending.record.sop_instance_uid)
                        pending.stray = known is not None and known[0] != pending.record.path
                    except queries.SeriesInOtherStudyError as err:
                        # this instance alone fails; the savepoint keeps the batch's others
                        pending.error = _series_in_other_study(
                            err.series_instance_uid, err.study_instance_uid
                        )
        except (SQLAlchemyError, ValueError) as err:
            for pending in batch:
                pending.error = pending.error or IngestError(
                    "database_error",
                    f"cannot record the instance: {err}",
                    StoreStatus.OUT_OF_RESOURCES,
                )

    def _record_grouped(self, session: Session, batch: list[_Pending]) -> list[_Pending]:
        """Record the instances of a batch that came the same way (association, source AE)
        with one multi-row insert per group, each group in a savepoint; return those left to
        record one by one: lone instances, and the groups where one instance fails (a
        duplicate, a series of another study), which then tell which."""
        groups: dict[tuple[int | None, str | None], list[_Pending]] = {}
        for pending in batch:
            groups.setdefault((pending.association_id, pending.source_ae), []).append(pending)
        rest: list[_Pending] = []
        for (association_id, source_ae), group in sorted(
            groups.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1] or "")
        ):
            if len(group) < 2:
                rest.extend(group)
                continue
            try:
                with session.begin_nested():
                    queries.record_instances(
                        session,
                        [p.record for p in group],
                        association_id=association_id,
                        source_ae=source_ae,
                    )
            except (IntegrityError, queries.SeriesInOtherStudyError):
                rest.extend(group)
        return rest

    def _remove_unrecorded(self, batch: list[_Pending]) -> None:
        """Delete the files that no row points to: those of refused instances, and a duplicate's
        second copy under another path. A file that replaced an older one stays (the older
        one's row may point to it)."""
        for pending in batch:
            unrecorded = pending.error is not None or pending.stray
            if pending.published and unrecorded and not pending.replaced:
                try:
                    pending.staged.target.unlink(missing_ok=True)
                except OSError:
                    logger.exception("cannot remove the unrecorded file %s", pending.staged.target)


def _series_in_other_study(series_uid: str, study_uid: str) -> IngestError:
    return IngestError(
        "series_in_other_study",
        f"Series Instance UID {series_uid} already belongs to another study than "
        f"{study_uid}: a series is part of one study only (PS3.3 C.7.3.1)",
        StoreStatus.CANNOT_UNDERSTAND,
    )


def _read_header(part10: bytes) -> tuple[Dataset, str]:
    """Parse the file meta and the data set up to the pixel data."""
    try:
        ds = dcmread(BytesIO(part10), stop_before_pixels=True)
        transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
        # touch the elements we need so that a malformed value fails here, not later
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
            ds.get(keyword)
        # pydicom takes a value shorter than its declared length: a data set cut short in
        # transit must not be acknowledged
        check_complete(part10, transfer_syntax)
    except (InvalidDicomError, AttributeError, ValueError, KeyError, EOFError, OSError) as err:
        raise IngestError(
            "malformed_dataset", f"cannot parse the data set: {err}", StoreStatus.CANNOT_UNDERSTAND
        ) from err
    return ds, transfer_syntax
