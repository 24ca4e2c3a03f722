"""The "not evaluated" Comprehensive SR: says in words that the study was not analysed, and why.

Structure (no template claimed; laid out like TID 2000 Basic Diagnostic Imaging Report): root
CONTAINER LN 18748-4 "Diagnostic Imaging Report" (CID 7000) with language (TID 1204), observer
context = device (TID 1001/1004), procedure reported, and a CONTAINER DCM 121070 "Findings"
(CID 7001) holding TEXT DCM 121071 "Finding" = "Not evaluated: <reason>" (lines of at most
80 characters joined by CR LF; modified by the TID 4019 algorithm identification) and TEXT
comments. Both containers are SEPARATE. It holds no finding code and no measurement, so no
reader can take it for a negative result.

Why not the TID 1500 title (DCM 126000 "Imaging Measurement Report"): viewers treat a document
with that title as a measurement report and look for measurement groups in it. OHIF 3.13 then
crashes ("Something went wrong": TypeError reading ``displaySetInstanceUID`` of the missing
first measurement); with any other title it shows the document as text, one item a line.
Checked in ``tests/integration/test_ohif_viewer.py``.
"""

from __future__ import annotations

import logging
import textwrap

import highdicom as hd
from highdicom.sr.templates import DEFAULT_LANGUAGE
from pydicom.sr.codedict import codes

from pipeline.outputs.identity import (
    MANUFACTURER,
    RESEARCH_USE_ONLY,
    ResultIdentity,
    algorithm_identification,
    with_patient_study,
)
from pipeline.outputs.text import (
    device_observation_context,
    models_sentence,
    text_item,
)
from pipeline.results import ModelInfo, NotEvaluatedResult

logger = logging.getLogger(__name__)

#: CID 7000 document title of the root container (not TID 1500's "Imaging Measurement Report").
DOCUMENT_TITLE = codes.cid7000.DiagnosticImagingReport

NOT_EVALUATED_PREFIX = "Not evaluated: "
#: Line length of the "Not evaluated" statement: viewers show a Finding as preformatted text
#: (OHIF 3.13 puts it in a <pre>, which does not wrap), so long reasons are broken into lines.
FINDING_LINE_LENGTH = 80


def not_evaluated_sentence(result: NotEvaluatedResult) -> str:
    """E.g. "Not evaluated: no axial T2-weighted series in the study"."""
    reason = (result.reason or "").strip() or "no reason was recorded"
    return NOT_EVALUATED_PREFIX + reason


def _algorithm(result: NotEvaluatedResult, software_version: str) -> hd.sr.AlgorithmIdentification:
    model = result.classification_model or result.segmentation_model
    if model is None:
        return hd.sr.AlgorithmIdentification(
            name=MANUFACTURER,
            version=software_version,
            family=codes.DCM.ArtificialIntelligence,
            manufacturer=MANUFACTURER,
        )
    return algorithm_identification(model)


def build_not_evaluated_sr(
    result: NotEvaluatedResult, *, software_version: str
) -> hd.sr.ComprehensiveSR:
    """Build the SR that says a study was not evaluated and why.

    Parameters
    ----------
    result
        A pipeline result with ``evaluated`` False; ``reason`` is written as given.
    software_version
        liver-agent version written in Software Versions and, without a model, in TID 4019.

    Returns
    -------
    highdicom.sr.ComprehensiveSR
        Series number 9902, description "AI Liver SR - NOT EVALUATED - RESEARCH USE ONLY",
        CompletionFlag COMPLETE, VerificationFlag UNVERIFIED.
    """
    model: ModelInfo | None = result.classification_model or result.segmentation_model
    identity = ResultIdentity(
        "not_evaluated_sr",
        model,
        (result.classification_model, result.segmentation_model),
        software_version,
    )
    reference = with_patient_study(result.reference, result.reference)

    statement = "\r\n".join(
        textwrap.wrap(not_evaluated_sentence(result), FINDING_LINE_LENGTH, break_long_words=False)
    )
    finding = text_item(codes.DCM.Finding, statement)
    finding.ContentSequence = hd.sr.ContentSequence(_algorithm(result, software_version))
    notes = [
        finding,
        text_item(
            codes.DCM.Comment,
            "The AI analysis gave no result for this study. This is not a negative result: "
            "cirrhosis of liver was neither found nor excluded.",
        ),
        text_item(codes.DCM.Comment, f"Reason code: {result.reason_code or 'unknown'}"),
    ]
    if model is not None:
        notes.append(
            text_item(
                codes.DCM.Comment,
                models_sentence(result.classification_model, result.segmentation_model),
            )
        )
    if identity.demo:
        notes.append(
            text_item(codes.DCM.Comment, "DEMO MODEL: made by a demo bundle (synthetic phantoms).")
        )
    notes.append(text_item(codes.DCM.Comment, f"{RESEARCH_USE_ONLY}: not for diagnostic use."))
    # SEPARATE items: a viewer that shows the document as text puts each on its own line
    container = hd.sr.ContainerContentItem(
        name=codes.DCM.Findings,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        is_content_continuous=False,
    )
    container.ContentSequence = hd.sr.ContentSequence(notes)

    root = hd.sr.ContainerContentItem(name=DOCUMENT_TITLE, is_content_continuous=False)
    root.ContentSequence = hd.sr.ContentSequence(
        [
            *hd.sr.LanguageOfContentItemAndDescendants(DEFAULT_LANGUAGE),
            *device_observation_context(model),
            hd.sr.CodeContentItem(
                name=codes.DCM.ProcedureReported,
                value=codes.LN.MRIUnspecifiedBodyRegion,
                relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD,
            ),
            container,
        ]
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[reference],
        content=root,
        is_complete=True,
        is_final=False,
        is_verified=False,
        **identity.sop_arguments(),
    )
    identity.stamp(sr, result.reference)
    logger.info(
        "built not-evaluated SR %s for study %s (%s)",
        sr.SOPInstanceUID,
        result.study_instance_uid,
        result.reason_code,
    )
    return sr
