"""On-demand requests: retrieve one study from a source and let it be processed exactly like a
pushed study ("run the liver AI on this study"). The instances go through the ingest path;
once the retrieval's association is released the completion rule queues the job, whose
results are delivered as configured."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from agent.context import AgentContext
from agent.errors import RetrieveError
from agent.retrieve.factory import make_retriever
from agent.retrieve.fetch import StudyFetcher, parse_requested
from agent.settings import RetrieveMethod, Settings, Source
from pipeline.selection import load_rules
from storage import cohorts as store
from storage import queries

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestOutcome:
    """What a request brought in."""

    source: str
    requested: str
    study_instance_uid: str
    accession_number: str | None
    series: int
    instances: int
    latest_job_id: int | None


def choose_source(settings: Settings, name: str | None) -> Source:
    """The named source, or the only one configured.

    Raises
    ------
    RetrieveError
        ``unknown_source`` / ``no_source``: the name is not configured, none is, or several
        are and none was named.
    """
    if name is not None:
        source = settings.source(name)
        if source is None:
            known = ", ".join(s.name for s in settings.sources) or "none"
            raise RetrieveError("unknown_source", f"no source named {name!r} (configured: {known})")
        return source
    if len(settings.sources) == 1:
        return settings.sources[0]
    if not settings.sources:
        raise RetrieveError("no_source", "no source is configured (settings 'sources')")
    raise RetrieveError("no_source", "several sources are configured: name one")


def request_study(
    ctx: AgentContext, source: Source, study: str, *, scp_running: bool
) -> RequestOutcome:
    """Retrieve the study ``study`` (accession number or Study Instance UID) from ``source``.

    ``scp_running``: the calling process runs the agent's SCP (``serve``), which takes C-MOVE
    results; otherwise a temporary SCP is started for them when no agent answers.

    Raises
    ------
    RetrieveError
        The study is not on the source, or the source could not be queried or retrieved from.
    IngestError
        A retrieved instance could not be stored.
    """
    requested = parse_requested(study)
    retriever = make_retriever(
        source,
        calling_ae=ctx.settings.dicom.ae_title,
        move_destination=source.move_destination or ctx.settings.dicom.ae_title,
    )
    fetcher = StudyFetcher(
        ctx, source, retriever, load_rules(ctx.settings.pipeline.selection_rules)
    )
    uid, accession = fetcher.resolve(requested)
    with contextlib.ExitStack() as stack:
        if source.retrieve is RetrieveMethod.MOVE and not scp_running:
            from agent.cohorts.receiver import move_receiver

            stack.enter_context(move_receiver(ctx))
        series, instances = fetcher.fetch(uid)
    with ctx.sessions() as session:
        study_id = store.study_row_id(session, uid)
        latest = None if study_id is None else queries.latest_job_id(session, study_id)
    logger.info(
        "request %s: study %s from %s, %d series, %d instances held",
        requested.split(":", 1)[0],
        uid,
        source.name,
        series,
        instances,
    )
    return RequestOutcome(source.name, requested, uid, accession, series, instances, latest)
