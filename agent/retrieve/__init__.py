"""Query/Retrieve from a source archive as an SCU: C-FIND + C-MOVE or C-GET (PS3.4 Annex C),
QIDO-RS + WADO-RS (PS3.18). One handler per transport behind :class:`Retriever`."""

from agent.retrieve.base import InstanceSink, Retrieved, Retriever, StudyMatch, StudyQuery
from agent.retrieve.factory import make_retriever

__all__ = [
    "InstanceSink",
    "Retrieved",
    "Retriever",
    "StudyMatch",
    "StudyQuery",
    "make_retriever",
]
