"""Secondary Capture of the caudate-level slice with the liver outline and the result burned in."""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from pipeline.errors import PipelineError
from pipeline.outputs.identity import (
    RESEARCH_USE_ONLY,
    ResultIdentity,
    is_demo,
    with_patient_study,
)
from pipeline.outputs.render import RED, YELLOW, TextLine, render_overlay
from pipeline.outputs.text import finding_sentence, model_sentence, slice_sentence
from pipeline.results import EvaluatedResult

logger = logging.getLogger(__name__)


def patient_orientation(cosine: npt.NDArray[np.float64]) -> str:
    """The single patient-orientation letter (PS3.3 C.7.6.1.1.1) closest to a direction cosine."""
    axis = int(np.argmax(np.abs(cosine)))
    positive = cosine[axis] > 0
    return (("L", "R"), ("P", "A"), ("H", "F"))[axis][0 if positive else 1]


def result_lines(
    result: EvaluatedResult, caudate_image: Dataset, *, heatmap: bool = False
) -> list[TextLine]:
    """The text burned into the SC, top to bottom."""
    assert result.segmentation is not None
    assert result.caudate is not None
    classification = result.classification
    if classification is None:
        lines = [TextLine("Cirrhosis of liver: NOT EVALUATED (DEMO classifier, real study)", RED)]
    else:
        lines = [TextLine(finding_sentence(classification))]
    if classification is not None and classification.mode == "whole":
        lines.append(TextLine("Classified on the whole slice (no liver mask)"))
    lines.append(
        TextLine(
            f"Liver area on this slice {result.caudate.liver_area_mm2 / 100:.1f} cm2, "
            f"liver volume {result.segmentation.volume_ml:.0f} ml (yellow outline)"
        )
    )
    lines.append(TextLine(slice_sentence(caudate_image)))
    if heatmap and result.heatmap is not None:
        share = result.heatmap.share_in_liver
        lines.append(
            TextLine(
                f"Heat map: where the classifier looked ({result.heatmap.method}, "
                f"{result.heatmap.class_name})"
                + ("" if share is None else f"; {share:.0%} of it inside the liver outline")
            )
        )
    for model in (result.classification_model, result.segmentation_model):
        if model is not None:
            lines.append(TextLine(model_sentence(model)))
    if is_demo(result.classification_model, result.segmentation_model):
        lines.append(
            TextLine("DEMO MODEL - synthetic training data, meaningless for patients", RED)
        )
    lines.append(TextLine(f"{RESEARCH_USE_ONLY} - not for diagnosis, unverified", YELLOW))
    return lines


def build_sc(
    result: EvaluatedResult, *, software_version: str, heatmap: bool = False
) -> hd.sc.SCImage:
    """Build the RGB Secondary Capture (SOP Class 1.2.840.10008.5.1.4.1.1.7) of the caudate slice.

    Parameters
    ----------
    result
        An evaluated pipeline result.
    software_version
        liver-agent version written in Software Versions.
    heatmap
        Lay the classifier's heat map (``result.heatmap``, when there is one) over the slice.

    Returns
    -------
    highdicom.sc.SCImage
        8-bit RGB, Burned In Annotation YES, series number 9903, the source slice referenced in
        Source Image Sequence.
    """
    volume, caudate, segmentation = result.volume, result.caudate, result.segmentation
    if (
        volume is None
        or caudate is None
        or segmentation is None
        or (result.classification is None and result.finding_withheld is None)
    ):
        raise PipelineError(
            "output_encoding", "the result lacks the slice, mask or finding to draw in the SC"
        )
    header = with_patient_study(volume.headers[caudate.index], result.reference)
    cam = result.heatmap.cam if heatmap and result.heatmap is not None else None
    pixels = render_overlay(
        volume.pixels[caudate.index],
        segmentation.mask[caudate.index],
        result_lines(result, header, heatmap=cam is not None),
        cam=cam,
    )
    model = result.classification_model
    identity = ResultIdentity("sc", model, (model, result.segmentation_model), software_version)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=(
            patient_orientation(volume.row_cosine),
            patient_orientation(volume.column_cosine),
        ),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        **identity.sop_arguments(),
    )
    source = Dataset()
    source.ReferencedSOPClassUID = header.SOPClassUID
    source.ReferencedSOPInstanceUID = header.SOPInstanceUID
    sc.SourceImageSequence = [source]
    sc.BurnedInAnnotation = "YES"
    sc.ImageLaterality = "U"  # the liver is unpaired (dciodvfy asks for Laterality otherwise)
    sc.DerivationDescription = (
        "Caudate-level slice with AI liver outline and result text"
        + (" and the classifier's Grad-CAM heat map" if cam is not None else "")
        + (" - DEMO MODEL" if identity.demo else "")
        + f" - {RESEARCH_USE_ONLY}"
    )
    identity.stamp(sc, result.reference)
    logger.info("built SC %s of slice %s", sc.SOPInstanceUID, caudate.sop_instance_uid)
    return sc
