"""Key Object Selection document flagging the caudate-level slice as the key image (PS3.3 A.59).

Many PACS viewers show key images and nothing else of an SR: the KOS makes the slice the
result was computed on one click away there. Title DCM 113000 "Of Interest" (CID 7010), with a
Key Object Description that says what the slice is; observer = the agent as a device.
"""

from __future__ import annotations

import logging

import highdicom as hd
from pydicom.sr.codedict import codes

from pipeline.errors import PipelineError
from pipeline.outputs.identity import (
    RESEARCH_USE_ONLY,
    ResultIdentity,
    is_demo,
    with_patient_study,
)
from pipeline.outputs.text import device_observer
from pipeline.results import EvaluatedResult

logger = logging.getLogger(__name__)

#: CID 7010 Key Object Selection Document Title
KEY_IMAGE_TITLE = codes.DCM.OfInterest  # DCM 113000


def key_image_description(result: EvaluatedResult) -> str:
    """Key Object Description (at most 1024 characters), e.g. "AI liver: caudate-level slice
    (cirrhosis of liver: present, probability 0.87) - RESEARCH USE ONLY"."""
    demo = "DEMO MODEL " if is_demo(result.classification_model, result.segmentation_model) else ""
    classification = result.classification
    if classification is None:  # a DEMO classifier on a real study: no finding
        finding = "cirrhosis of liver: not evaluated (DEMO classifier)"
    else:
        verdict = "present" if classification.present else "absent"
        finding = f"cirrhosis of liver: {verdict}, probability {classification.probability:.2f}"
    return f"{demo}AI liver: caudate-level slice ({finding}) - {RESEARCH_USE_ONLY}"


def build_kos(
    result: EvaluatedResult, *, software_version: str
) -> hd.ko.KeyObjectSelectionDocument:
    """Build the Key Object Selection document of an evaluated result.

    Parameters
    ----------
    result
        An evaluated pipeline result.
    software_version
        liver-agent version written in Software Versions.

    Returns
    -------
    highdicom.ko.KeyObjectSelectionDocument
        Series number 9904, title "Of Interest", the caudate-level slice as its one key image.

    Raises
    ------
    PipelineError
        ``output_encoding`` when the caudate slice index and its SOP Instance UID disagree.
    """
    volume, caudate = result.volume, result.caudate
    if str(volume.headers[caudate.index].SOPInstanceUID) != caudate.sop_instance_uid:
        raise PipelineError(
            "output_encoding",
            "the caudate-level slice index does not point at its SOP Instance UID in the series",
        )
    caudate_image = with_patient_study(volume.headers[caudate.index], result.reference)
    model = result.classification_model
    identity = ResultIdentity("kos", model, (model, result.segmentation_model), software_version)
    content = hd.ko.KeyObjectSelection(
        document_title=KEY_IMAGE_TITLE,
        referenced_objects=[caudate_image],
        observer_device_context=device_observer(model),
        description=key_image_description(result),
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=[caudate_image],
        content=content,
        **identity.sop_arguments(),
    )
    identity.stamp(kos, result.reference)
    logger.info("built KOS %s flagging slice %s", kos.SOPInstanceUID, caudate.sop_instance_uid)
    return kos
