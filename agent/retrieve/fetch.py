"""One study from a source into the agent: resolve what was asked for (accession number or
Study Instance UID) on the source, list its series, keep the candidates of the selection
(:mod:`pipeline.selection.prefilter`), and retrieve those not yet in the spool through the
ingest path (C-GET and WADO-RS here; C-MOVE results reach the agent's SCP)."""

from __future__ import annotations

import logging
import threading

from agent.context import AgentContext
from agent.errors import RetrieveError
from agent.masking import mask_url_password
from agent.retrieve.base import Retriever, StudyQuery
from agent.settings import RetrieveMethod, Source
from pipeline.selection.prefilter import candidate_series
from pipeline.selection.rules import SelectionRules
from storage import cohorts as store
from storage.models import AssociationStatus, IngestProtocol

logger = logging.getLogger(__name__)

#: code of the RetrieveError raised when a stop was asked for before a retrieval began
INTERRUPTED = "interrupted"


def parse_requested(text: str) -> str:
    """``accession:X`` / ``study:UID`` for a value a user typed: a UID has digits and dots only
    and at least one dot; anything else is an accession number."""
    value = text.strip()
    if value.startswith(("accession:", "study:")):
        return value
    if value and "." in value and all(c.isdigit() or c == "." for c in value):
        return f"study:{value}"
    return f"accession:{value}"


class StudyFetcher:
    """Resolves and fetches studies of one source for one agent process."""

    def __init__(
        self,
        ctx: AgentContext,
        source: Source,
        retriever: Retriever,
        rules: SelectionRules,
        stop: threading.Event | None = None,
    ) -> None:
        self.ctx = ctx
        self.source = source
        self.retriever = retriever
        self.rules = rules
        self.stop = stop or threading.Event()

    def resolve(self, requested: str) -> tuple[str, str | None]:
        """(Study Instance UID, accession number) of ``accession:X`` / ``study:UID``.

        Raises
        ------
        RetrieveError
            ``accession_not_found``, ``accession_ambiguous``, ``study_not_found``, or the
            query's own failure (``source_unreachable``, ``query_failed``).
        """
        kind, _, value = requested.partition(":")
        if kind == "accession":
            matches = self.retriever.find_studies(StudyQuery(accession_number=value, modality=None))
            if not matches:
                raise RetrieveError(
                    "accession_not_found",
                    f"source {self.source.name} has no study with accession number {value}",
                )
            uids = sorted({m.study_instance_uid for m in matches})
            if len(uids) > 1:
                raise RetrieveError(
                    "accession_ambiguous",
                    f"accession number {value} matches {len(uids)} studies on source "
                    f"{self.source.name}: list their study UIDs instead ({', '.join(uids)})",
                )
            return uids[0], value
        matches = self.retriever.find_studies(StudyQuery(study_instance_uid=value, modality=None))
        if not matches:
            raise RetrieveError(
                "study_not_found",
                f"source {self.source.name} has no study with Study Instance UID {value}",
            )
        return value, matches[0].accession_number

    def fetch(self, study_uid: str) -> tuple[int, int]:
        """Fetch the study's candidate series not yet in the spool; return (series, instances
        the spool holds of them).

        Raises
        ------
        RetrieveError
            ``no_candidate_series`` (with each series' reason), ``retrieve_incomplete``, or the
            transport's failure (``move_destination_refused``, ``retrieve_failed``, ...).
        IngestError
            The agent could not store a retrieved instance (disk full, ...).
        """
        series = self.retriever.find_series(study_uid)
        wanted, decisions = candidate_series(series, self.rules)
        if not wanted:
            why = "; ".join(
                f"{d.series.description or d.series.series_instance_uid}: {d.reason}"
                for d in decisions
            )
            raise RetrieveError(
                "no_candidate_series",
                f"none of the study's {len(series)} series can be the axial T2 series"
                + (f" ({why})" if why else ""),
            )
        with self.ctx.sessions() as session:
            held = store.stored_series(session, study_uid)
        missing = [
            s.series_instance_uid
            for s in wanted
            if s.instances is None or held.get(s.series_instance_uid, 0) < s.instances
        ]
        if missing:
            if self.stop.is_set():
                raise RetrieveError(INTERRUPTED, "stopped before the retrieval began")
            self._retrieve(study_uid, missing)
        with self.ctx.sessions() as session:
            held = store.stored_series(session, study_uid)
        short = [s for s in wanted if held.get(s.series_instance_uid, 0) < (s.instances or 1)]
        if short:
            detail = ", ".join(
                f"{s.description or s.series_instance_uid} "
                f"{held.get(s.series_instance_uid, 0)}/{s.instances or '?'}"
                for s in short
            )
            raise RetrieveError(
                "retrieve_incomplete",
                f"the source did not deliver every instance asked for ({detail})",
            )
        return len(wanted), sum(held.get(s.series_instance_uid, 0) for s in wanted)

    def _retrieve(self, study_uid: str, series_uids: list[str]) -> None:
        logger.info(
            "retrieving %d series of study %s from %s (%s)",
            len(series_uids),
            study_uid,
            self.source.name,
            self.source.retrieve.value,
        )
        if self.source.retrieve is RetrieveMethod.MOVE:
            self.retriever.retrieve(study_uid, series_uids, _no_sink)
            return
        ingestor = self.ctx.ingestor
        protocol = (
            IngestProtocol.WADO
            if self.source.retrieve is RetrieveMethod.WADO
            else IngestProtocol.DIMSE
        )
        calling = self.source.ae_title or self.source.name[:16]
        association_id = ingestor.begin(
            calling_ae=calling,
            called_ae=self.ctx.settings.dicom.ae_title,
            peer_host=(self.source.host or mask_url_password(self.source.base_url or ""))[:64],
            protocol=protocol,
        )
        status = AssociationStatus.ABORTED
        try:

            def sink(part10: bytes) -> None:
                ingestor.store(
                    part10, association_id=association_id, source_ae=calling, protocol=protocol
                )

            self.retriever.retrieve(study_uid, series_uids, sink)
            status = AssociationStatus.RELEASED
        finally:
            ingestor.end(association_id, status)


def _no_sink(_part10: bytes) -> None:  # C-MOVE results reach the SCP, not the SCU
    raise RetrieveError("unexpected_instance", "C-MOVE does not bring instances to the SCU")
