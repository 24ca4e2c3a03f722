"""DIMSE Query/Retrieve SCU (PS3.4 Annex C, Study Root): C-FIND at study and series level,
then C-MOVE to the agent's own AE title or C-GET on the same association (PS3.4 C.4.3)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    EnhancedMRImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from agent.errors import RetrieveError
from agent.reactor_hold import reactor_held
from agent.retrieve.base import InstanceSink, Retrieved, StudyMatch, StudyQuery
from agent.settings import RetrieveMethod, Source
from pipeline.selection.prefilter import SeriesSummary

logger = logging.getLogger(__name__)

_PENDING = (0xFF00, 0xFF01)
_MOVE_DESTINATION_UNKNOWN = 0xA801
#: what the prefilter lets through is MR: these are the storage classes a C-GET accepts
_GET_STORAGE = (MRImageStorage, EnhancedMRImageStorage)


class DimseRetriever:
    """C-FIND + C-MOVE / C-GET against one DICOM node.

    Parameters
    ----------
    source
        The node (``ae_title``, ``host``, ``port``) and ``retrieve: move | get``.
    calling_ae
        The agent's AE title on these associations.
    move_destination
        The AE title C-MOVE sends to: the agent's own SCP, declared in the source.
    """

    def __init__(self, source: Source, *, calling_ae: str, move_destination: str) -> None:
        if source.ae_title is None or source.host is None or source.port is None:
            raise ValueError(f"source {source.name} is not a DICOM node")
        self.source = source
        self.name = source.name
        self.calling_ae = calling_ae
        self.move_destination = move_destination

    # associations ---------------------------------------------------------------------------

    def _ae(self) -> AE:
        ae = AE(ae_title=self.calling_ae)
        timeout = self.source.timeout_seconds
        ae.connection_timeout = ae.acse_timeout = timeout
        ae.dimse_timeout = ae.network_timeout = timeout
        ae.maximum_pdu_size = 0
        return ae

    @contextmanager
    def _association(
        self, ae: AE, *, ext_neg: list[Any] | None = None, handlers: list[Any] | None = None
    ) -> Iterator[Association]:
        s = self.source
        assert s.ae_title is not None
        assert s.host is not None
        assert s.port is not None
        assoc = ae.associate(
            s.host, s.port, ae_title=s.ae_title, ext_neg=ext_neg, evt_handlers=handlers
        )
        if not assoc.is_established:
            raise RetrieveError(
                "source_unreachable",
                f"source {s.name} ({s.ae_title}@{s.host}:{s.port}) refused or did not answer "
                f"the association from {self.calling_ae}",
            )
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _find(self, identifier: Dataset) -> list[Dataset]:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        found: list[Dataset] = []
        with self._association(ae) as assoc, reactor_held(assoc):
            for status, answer in assoc.send_c_find(
                identifier, StudyRootQueryRetrieveInformationModelFind
            ):
                if not status:
                    raise RetrieveError(
                        "query_failed",
                        f"source {self.name}: C-FIND got no answer (timeout, or the source "
                        f"aborted: does it know the AE title {self.calling_ae}?)",
                    )
                code = int(status.Status)
                if code in _PENDING and answer is not None:
                    found.append(answer)
                elif code not in _PENDING and code != 0x0000:
                    raise RetrieveError(
                        "query_failed",
                        f"source {self.name}: C-FIND failed with status 0x{code:04X}"
                        + _comment(status),
                    )
        return found

    # queries --------------------------------------------------------------------------------

    def find_studies(self, query: StudyQuery) -> list[StudyMatch]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = query.study_instance_uid or ""
        ds.AccessionNumber = query.accession_number or ""
        ds.StudyDate = _date_range(query.date_from, query.date_to)
        ds.StudyDescription = query.description or ""
        ds.ModalitiesInStudy = query.modality or ""
        ds.PatientID = ""
        matches = []
        for answer in self._find(ds):
            uid = str(answer.get("StudyInstanceUID") or "")
            if uid:
                matches.append(
                    StudyMatch(
                        study_instance_uid=uid,
                        accession_number=_text(answer, "AccessionNumber"),
                        study_date=_text(answer, "StudyDate"),
                        study_description=_text(answer, "StudyDescription"),
                    )
                )
        return matches

    def find_series(self, study_instance_uid: str) -> list[SeriesSummary]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study_instance_uid
        ds.SeriesInstanceUID = ""
        ds.Modality = ""
        ds.SeriesDescription = ""
        ds.SeriesNumber = ""
        ds.NumberOfSeriesRelatedInstances = ""
        out = []
        for answer in self._find(ds):
            uid = str(answer.get("SeriesInstanceUID") or "")
            if uid:
                out.append(
                    SeriesSummary(
                        series_instance_uid=uid,
                        modality=_text(answer, "Modality"),
                        description=_text(answer, "SeriesDescription"),
                        series_number=_int(answer, "SeriesNumber"),
                        instances=_int(answer, "NumberOfSeriesRelatedInstances"),
                    )
                )
        return out

    # retrieval ------------------------------------------------------------------------------

    def retrieve(
        self, study_instance_uid: str, series_instance_uids: list[str], sink: InstanceSink
    ) -> Retrieved:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = study_instance_uid
        identifier.SeriesInstanceUID = series_instance_uids
        if self.source.retrieve is RetrieveMethod.GET:
            return self._get(identifier, sink)
        return self._move(identifier)

    def _move(self, identifier: Dataset) -> Retrieved:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        with self._association(ae) as assoc, reactor_held(assoc):
            last: tuple[int, Dataset] | None = None
            for status, _answer in assoc.send_c_move(
                identifier, self.move_destination, StudyRootQueryRetrieveInformationModelMove
            ):
                if not status:
                    raise RetrieveError(
                        "retrieve_failed", f"source {self.name}: C-MOVE got no answer (timeout)"
                    )
                last = (int(status.Status), status)
        return self._outcome(last, "C-MOVE")

    def _get(self, identifier: Dataset, sink: InstanceSink) -> Retrieved:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        for sop_class in _GET_STORAGE:
            ae.add_requested_context(sop_class, ALL_TRANSFER_SYNTAXES)
        roles = [build_role(sop_class, scp_role=True) for sop_class in _GET_STORAGE]
        errors: list[str] = []

        def on_store(event: evt.Event) -> int:
            try:
                sink(event.encoded_dataset(include_meta=True))
            except Exception as err:  # noqa: BLE001 (the refusal becomes the C-STORE status)
                errors.append(f"{type(err).__name__}: {err}")
                logger.warning("C-GET instance refused by the ingest: %s", err)
                return 0xA700
            return 0x0000

        handlers = [(evt.EVT_C_STORE, on_store)]
        # held: the sub-operations' C-STORE requests are served by send_c_get itself
        with self._association(ae, ext_neg=roles, handlers=handlers) as assoc, reactor_held(assoc):
            last: tuple[int, Dataset] | None = None
            for status, _answer in assoc.send_c_get(
                identifier, StudyRootQueryRetrieveInformationModelGet
            ):
                if not status:
                    raise RetrieveError(
                        "retrieve_failed",
                        f"source {self.name}: C-GET got no answer (timeout, or the source "
                        f"aborted: does it allow C-GET from {self.calling_ae}?)",
                    )
                last = (int(status.Status), status)
        if errors:
            raise RetrieveError(
                "ingest_failed", f"{len(errors)} instance(s) could not be stored: {errors[0]}"
            )
        return self._outcome(last, "C-GET")

    def _outcome(self, last: tuple[int, Dataset] | None, what: str) -> Retrieved:
        if last is None:
            raise RetrieveError("retrieve_failed", f"source {self.name}: {what} had no response")
        code, status = last
        if code == _MOVE_DESTINATION_UNKNOWN:
            raise RetrieveError(
                "move_destination_refused",
                f"source {self.name} does not know {self.move_destination!r} as a move "
                f"destination (status 0x{code:04X}): declare the agent's AE title, host and "
                "port in the PACS, or use retrieve: get",
            )
        completed = _int(status, "NumberOfCompletedSuboperations") or 0
        failed = _int(status, "NumberOfFailedSuboperations") or 0
        warning = _int(status, "NumberOfWarningSuboperations") or 0
        if code in (0x0000, 0xB000) or (code & 0xF000) == 0xB000:
            return Retrieved(completed, failed, warning)
        if (
            what == "C-MOVE"
            and completed + failed + warning == 0
            and (code & 0xF000)
            in (
                0xA000,
                0xC000,
            )
        ):
            # refused before any sub-operation: a PACS that does not know the destination
            # answers 0xA801, some (Orthanc) a plain 0xC000
            raise RetrieveError(
                "move_destination_refused",
                f"source {self.name} refused the C-MOVE to {self.move_destination!r} before "
                f"sending anything (status 0x{code:04X}{_comment(status)}): most often the "
                "source does not know this AE title as a move destination; declare the "
                "agent's AE title, host and port in the PACS, or use retrieve: get",
            )
        if code == 0xFE00:
            raise RetrieveError("retrieve_cancelled", f"source {self.name}: {what} was cancelled")
        raise RetrieveError(
            "retrieve_failed",
            f"source {self.name}: {what} failed with status 0x{code:04X} "
            f"({completed} completed, {failed} failed)" + _comment(status),
        )


def _comment(status: Dataset) -> str:
    comment = status.get("ErrorComment")
    return f": {comment}" if comment else ""


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value in (None, "") else str(value)


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _date_range(date_from: str | None, date_to: str | None) -> str:
    """DICOM range matching (PS3.4 C.2.2.2.5): ``from-to``, ``from-``, ``-to`` or universal."""
    if not date_from and not date_to:
        return ""
    return f"{date_from or ''}-{date_to or ''}"
