"""Comprehensive 3D SR, TID 1500 Measurement Report: cirrhosis finding and liver measurements.

The caudate-level result is a TID 1410 planar ROI group whose region is an image SCOORD on the
caudate slice: dciodvfy reports neither errors nor warnings for it. (The known dciodvfy failure
of TID 1410 is a region given as a SEG frame reference: highdicom writes both Referenced Frame
Number and Referenced Segment Number, "Shall not be present when ReferencedFrameNumber is
present". This report does not use one: the SEG is referenced from the TID 1411 volume group.)
"""

from __future__ import annotations

import logging

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pipeline.errors import PipelineError
from pipeline.outputs.identity import (
    RESEARCH_USE_ONLY,
    ResultIdentity,
    algorithm_identification,
    is_demo,
    with_patient_study,
)
from pipeline.outputs.outline import liver_outline
from pipeline.outputs.seg import LIVER_SEGMENT_NUMBER
from pipeline.outputs.text import (
    QUALITATIVE_EVALUATIONS,
    device_observation_context,
    finding_sentence,
    models_sentence,
    slice_sentence,
    text_item,
)
from pipeline.results import Classification, EvaluatedResult

logger = logging.getLogger(__name__)

#: DCM 122157 "Probability", with a Code Meaning that says of what: viewers (OHIF) label a NUM
#: by its concept's Code Meaning alone, so "Probability" next to a liver outline says too little.
PROBABILITY_OF_CIRRHOSIS = hd.sr.CodedConcept(
    value="122157", scheme_designator="DCM", meaning="Probability of cirrhosis"
)
#: The probability is written in percent: viewers print a NUM as "<value> <unit code>", and
#: "87.35 %" reads well where "0.87 1" (UCUM "1", no units) does not.
PERCENT = hd.sr.CodedConcept(value="%", scheme_designator="UCUM", meaning="percent")
SQUARE_MILLIMETER = hd.sr.CodedConcept(value="mm2", scheme_designator="UCUM", meaning="mm2")
MILLILITER = hd.sr.CodedConcept(value="ml", scheme_designator="UCUM", meaning="ml")
CIRRHOSIS = codes.SCT.CirrhosisOfLiver  # SCT 19943007
PRESENT = codes.SCT.Present  # SCT 52101004
ABSENT = codes.SCT.Absent  # SCT 272519000
#: The outline's graphic type. 2D SCOORD has no POLYGON (PS3.3 C.18.6.1.2: POINT, MULTIPOINT,
#: POLYLINE, CIRCLE, ELLIPSE; POLYGON exists only for SCOORD3D): a closed polygon is a POLYLINE
#: whose last vertex repeats the first. OHIF 3.13 draws it (checked in tests/integration/
#: test_ohif_viewer.py).
OUTLINE_GRAPHIC_TYPE = hd.sr.GraphicTypeValues.POLYLINE
TRACKING_IDENTIFIER = "Liver"


def _classification_parameters(classification: Classification) -> list[str]:
    source = "whole slice (no liver mask)" if classification.mode == "whole" else "liver-masked"
    return [
        f"input={source} caudate-level slice",
        f"threshold={classification.threshold:g}",
    ]


def caudate_group(
    result: EvaluatedResult,
    tracking_uid: str,
    caudate_image: Dataset,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410 planar ROI group on the caudate-level slice: the result a viewer draws.

    The region is the liver outline on that slice (a closed SCOORD polyline on the image); the
    group holds the finding "Cirrhosis of liver" Present/Absent (TID 1410 row 13), the
    probability of cirrhosis in percent from the classifier (the group's TID 4019) and the
    liver area on the slice from the segmentation (its own TID 4019 on the measurement).

    When the result withholds the finding (a DEMO classifier on a study that is not one of the
    project's phantoms, ``result.finding_withheld``) the group is the liver's (finding type
    Liver, the segmentation's algorithm) with the outline and the area only: no Present/Absent,
    no probability.
    """
    assert result.classification_model is not None
    assert result.segmentation_model is not None
    classification = result.classification
    outline = liver_outline(result.segmentation.mask[result.caudate.index])
    region = hd.sr.ImageRegion(
        graphic_type=OUTLINE_GRAPHIC_TYPE,
        graphic_data=outline,
        source_image=hd.sr.SourceImageForRegion.from_source_image(caudate_image),
    )
    area = hd.sr.Measurement(
        name=codes.SCT.Area,
        value=float(result.caudate.liver_area_mm2),
        unit=SQUARE_MILLIMETER,
        algorithm_id=algorithm_identification(result.segmentation_model),
    )
    if classification is None:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=tracking_uid, identifier=TRACKING_IDENTIFIER
            ),
            referenced_region=region,
            finding_type=codes.SCT.Liver,
            finding_category=codes.SCT.AnatomicalStructure,
            algorithm_id=algorithm_identification(result.segmentation_model),
            measurements=[area],
        )
    probability = hd.sr.Measurement(
        name=PROBABILITY_OF_CIRRHOSIS,
        value=100.0 * float(classification.probability),
        unit=PERCENT,
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=TRACKING_IDENTIFIER
        ),
        referenced_region=region,
        finding_type=CIRRHOSIS,
        algorithm_id=algorithm_identification(
            result.classification_model, _classification_parameters(classification)
        ),
        measurements=[area, probability],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=CIRRHOSIS, value=PRESENT if classification.present else ABSENT
            )
        ],
    )


def volume_group(
    result: EvaluatedResult, seg: Dataset | None, tracking_uid: str
) -> (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
):
    """The liver volume, in the caudate group's tracked finding (same Tracking UID).

    With a SEG: a TID 1411 group on its liver segment. Without one (a destination that takes the
    SR but not the SEG): a TID 1501 group with finding type Liver, so the report never points at
    an object the PACS does not have. Sharing the Tracking UID makes it one tracked finding with
    the caudate group: viewers that merge groups by Tracking UID (OHIF) show the volume beside
    the outline instead of failing on a group without image coordinates.
    """
    assert result.segmentation_model is not None
    volume = hd.sr.Measurement(
        name=codes.SCT.Volume,
        value=float(result.segmentation.volume_ml),
        unit=MILLILITER,
    )
    tracking = hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=TRACKING_IDENTIFIER)
    algorithm = algorithm_identification(result.segmentation_model)
    if seg is None:
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            finding_type=codes.SCT.Liver,
            finding_category=codes.SCT.AnatomicalStructure,
            algorithm_id=algorithm,
            measurements=[volume],
        )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=LIVER_SEGMENT_NUMBER,
            source_series=hd.sr.SourceSeriesForSegmentation(result.volume.series_instance_uid),
        ),
        finding_type=codes.SCT.Liver,
        finding_category=codes.SCT.AnatomicalStructure,
        algorithm_id=algorithm,
        measurements=[volume],
    )


def _notes(result: EvaluatedResult, caudate_image: Dataset) -> list[hd.sr.TextContentItem]:
    classification = result.classification
    if classification is None:
        # A DEMO classifier met a real study: no finding, and the report says so in words.
        finding = f"Cirrhosis of liver: NOT EVALUATED ({result.finding_withheld})"
    else:
        finding = finding_sentence(classification)
    notes = [
        text_item(codes.DCM.Finding, finding),
        text_item(codes.DCM.Comment, slice_sentence(caudate_image)),
    ]
    if classification is not None and classification.mode == "whole":
        notes.append(
            text_item(
                codes.DCM.Comment,
                "Classification mode: whole slice. The classifier saw the whole caudate-level "
                "slice, not the liver-masked slice.",
            )
        )
    notes.append(
        text_item(
            codes.DCM.Comment,
            models_sentence(result.classification_model, result.segmentation_model),
        )
    )
    if is_demo(result.classification_model, result.segmentation_model):
        notes.append(
            text_item(
                codes.DCM.Comment,
                "DEMO MODEL: made by a demo bundle trained on synthetic phantoms; "
                "it says nothing about this patient.",
            )
        )
    notes.append(
        text_item(
            codes.DCM.Comment,
            f"{RESEARCH_USE_ONLY}: automatic result, not verified by a physician, "
            "not for diagnostic use.",
        )
    )
    return notes


def build_sr(
    result: EvaluatedResult, seg: Dataset | None, *, software_version: str
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 Imaging Measurement Report of an evaluated result.

    Content: observer context = device (TID 1004); procedure reported LOINC 25056-3; the caudate
    slice in the image library (TID 1600); a TID 1410 planar ROI group on the caudate slice with
    the liver outline (closed SCOORD polyline), "Cirrhosis of liver" Present/Absent, the
    probability of cirrhosis (DCM 122157, in %) and the liver area on the slice (SCT 42798000,
    mm2); a TID 1411 group referencing the SEG's liver segment with the liver volume (SCT
    118565006, ml) (a TID 1501 group when there is no SEG), in the same tracked finding (one
    Tracking UID, the SEG segment's); and a Qualitative Evaluations container (TID 1500 row 12)
    with plain-text statements of the finding, slice and models. Every measurement group thus
    belongs to a tracked finding that has image coordinates, which viewers such as OHIF need.
    A result that withholds the finding (``finding_withheld``: a DEMO classifier on a real
    study) has no Present/Absent and no probability; its Finding text says NOT EVALUATED and why.

    Parameters
    ----------
    result
        An evaluated pipeline result.
    seg
        The SEG built from the same result (:func:`build_seg`), which the SR references; None
        when the destination does not take the SEG.
    software_version
        liver-agent version written in Software Versions.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        Series number 9902, CompletionFlag COMPLETE, VerificationFlag UNVERIFIED.

    Raises
    ------
    PipelineError
        ``output_encoding`` when the result lacks a part the report needs.
    """
    volume, caudate, classification = result.volume, result.caudate, result.classification
    seg_model, cls_model = result.segmentation_model, result.classification_model
    if (
        volume is None
        or caudate is None
        or (classification is None and result.finding_withheld is None)
        or result.segmentation is None
        or seg_model is None
        or cls_model is None
    ):
        raise PipelineError(
            "output_encoding",
            "the result lacks the volume, caudate slice, classification or model information "
            "the report needs",
        )
    header = volume.headers[caudate.index]
    if str(header.SOPInstanceUID) != caudate.sop_instance_uid:
        raise PipelineError(
            "output_encoding",
            "the caudate-level slice index does not point at its SOP Instance UID in the series",
        )
    caudate_image = with_patient_study(header, result.reference)
    # one tracked finding, the liver: the SEG segment's Tracking UID when there is a SEG
    tracking_uid = str(generate_uid())
    if seg is not None:
        segment = seg.SegmentSequence[LIVER_SEGMENT_NUMBER - 1]
        tracking_uid = str(segment.get("TrackingUID") or tracking_uid)
    report = hd.sr.MeasurementReport(
        observation_context=device_observation_context(cls_model),
        procedure_reported=codes.LN.MRIUnspecifiedBodyRegion,
        imaging_measurements=[
            caudate_group(result, tracking_uid, caudate_image),
            volume_group(result, seg, tracking_uid),
        ],
        referenced_images=[caudate_image],
    )
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(_notes(result, caudate_image))
    report[0].ContentSequence.append(container)
    identity = ResultIdentity("sr", cls_model, (cls_model, seg_model), software_version)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[caudate_image] if seg is None else [caudate_image, seg],
        content=report[0],
        is_complete=True,
        is_final=False,
        is_verified=False,
        **identity.sop_arguments(),
    )
    identity.stamp(sr, result.reference)
    logger.info(
        "built SR %s referencing SEG %s (finding %s)",
        sr.SOPInstanceUID,
        seg.SOPInstanceUID if seg is not None else "none",
        classification.label if classification is not None else "withheld",
    )
    return sr
