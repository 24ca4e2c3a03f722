"""A newer version of a study's results that replaces one already delivered says so.

When more images of a study arrive after its results reached the PACS, the agent runs the study
again and sends new objects (new UIDs) beside the old ones; DICOM has no "delete" for a PACS to
obey. So that a reader can tell the two sets apart and knows which one counts, each object of
the new version carries:

- a Series Number 10 higher per version (SEG 9901 -> 9911 -> 9921, SR 9902 -> 9912, ...), so the
  newer series sort after the older ones;
- " v2 replaces v1" in its Series Description (before "RESEARCH USE ONLY");
- SRs only: the earlier SR in the Predecessor Documents Sequence (0040,A360; SR Document General
  Module, PS3.3 C.17.2: the SR whose content this one supersedes), and a Comment that says this
  result replaces the earlier one, naming its SOP Instance UID and date.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pipeline.outputs.identity import RESEARCH_USE_ONLY
from pipeline.outputs.text import QUALITATIVE_EVALUATIONS, text_item

#: Series numbers step by this much per version
SERIES_NUMBER_STEP = 10
_DESCRIPTION_MAX = 64  # LO
_SR_MODALITY = "SR"


@dataclass(frozen=True)
class EarlierResult:
    """The delivered version a new one replaces.

    Attributes
    ----------
    version, replaced_by
        The earlier version's number and the new one's (job versions: 1, 2, ...).
    study_instance_uid
        The study both belong to.
    sr_sop_class_uid, sr_sop_instance_uid, sr_series_instance_uid
        The earlier SR that reached the PACS (TID 1500 or "not evaluated"), if one did.
    delivered_at
        When it was delivered (ISO 8601 text, for the sentence), if known.
    """

    version: int
    replaced_by: int
    study_instance_uid: str
    sr_sop_class_uid: str | None = None
    sr_sop_instance_uid: str | None = None
    sr_series_instance_uid: str | None = None
    delivered_at: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.version < self.replaced_by:
            raise ValueError(
                f"a version replaces an earlier one: {self.replaced_by} cannot replace "
                f"{self.version}"
            )

    @property
    def label(self) -> str:
        """``"v2 replaces v1"``."""
        return f"v{self.replaced_by} replaces v{self.version}"

    def sentence(self) -> str:
        """The Comment an SR of the new version carries."""
        text = (
            f"This result (version {self.replaced_by}) replaces the earlier result "
            f"(version {self.version}) of this study"
        )
        if self.sr_sop_instance_uid:
            text += f", SR {self.sr_sop_instance_uid}"
        if self.delivered_at:
            text += f", delivered {self.delivered_at}"
        return (
            text + ". More images of the study arrived after it was made; read this one and "
            "disregard the earlier one."
        )


def replacement_description(description: str, earlier: EarlierResult) -> str:
    """The Series Description with the version label before "RESEARCH USE ONLY", trimmed
    (never the label or "RESEARCH USE ONLY") to the 64 characters of LO."""
    tail = f" - {RESEARCH_USE_ONLY}"
    head = description[: -len(tail)] if description.endswith(tail) else description
    suffix = f" {earlier.label}{tail}"
    return head[: _DESCRIPTION_MAX - len(suffix)].rstrip() + suffix


def mark_replacement(dataset: Dataset, earlier: EarlierResult) -> None:
    """Mark one result object of the new version in place (see the module docstring).

    Call it before the object is written: it changes the Series Number and Description and,
    for an SR, its references and content.
    """
    dataset.SeriesNumber = int(dataset.SeriesNumber) + SERIES_NUMBER_STEP * (
        earlier.replaced_by - 1
    )
    dataset.SeriesDescription = replacement_description(str(dataset.SeriesDescription), earlier)
    if dataset.get("Modality") != _SR_MODALITY:
        return
    if earlier.sr_sop_instance_uid and earlier.sr_sop_class_uid and earlier.sr_series_instance_uid:
        sop = Dataset()
        sop.ReferencedSOPClassUID = earlier.sr_sop_class_uid
        sop.ReferencedSOPInstanceUID = earlier.sr_sop_instance_uid
        series = Dataset()
        series.SeriesInstanceUID = earlier.sr_series_instance_uid
        series.ReferencedSOPSequence = [sop]
        study = Dataset()
        study.StudyInstanceUID = earlier.study_instance_uid
        study.ReferencedSeriesSequence = [series]
        dataset.PredecessorDocumentsSequence = [study]
    _add_comment(dataset, earlier.sentence())


def _add_comment(sr: Dataset, sentence: str) -> None:
    """Put the sentence first in the report's text container: Qualitative Evaluations (TID
    1500) or Findings (the "not evaluated" SR); else at the end of the root."""
    note = text_item(codes.DCM.Comment, sentence)
    names = {
        (QUALITATIVE_EVALUATIONS.value, QUALITATIVE_EVALUATIONS.scheme_designator),
        (codes.DCM.Findings.value, codes.DCM.Findings.scheme_designator),
    }
    for item in sr.ContentSequence:
        concept = item.get("ConceptNameCodeSequence")
        if item.get("ValueType") != "CONTAINER" or not concept:
            continue
        if (concept[0].CodeValue, concept[0].CodingSchemeDesignator) in names:
            position = 1 if item.ContentSequence and _is_finding(item.ContentSequence[0]) else 0
            item.ContentSequence.insert(position, note)
            return
    sr.ContentSequence.append(note)


def _is_finding(item: Dataset) -> bool:
    concept = item.get("ConceptNameCodeSequence")
    return bool(concept) and concept[0].CodeValue == codes.DCM.Finding.value
