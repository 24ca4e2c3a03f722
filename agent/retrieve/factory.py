"""The retriever of a configured source."""

from __future__ import annotations

from agent.retrieve.base import Retriever
from agent.settings import RetrieveMethod, Source


def make_retriever(source: Source, *, calling_ae: str, move_destination: str) -> Retriever:
    """The transport handler for ``source`` (``retrieve: move | get | wado``)."""
    if source.retrieve is RetrieveMethod.WADO:
        from agent.retrieve.dicomweb import DicomwebRetriever

        return DicomwebRetriever(source)
    from agent.retrieve.dimse import DimseRetriever

    return DimseRetriever(source, calling_ae=calling_ae, move_destination=move_destination)
