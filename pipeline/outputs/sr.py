"""Comprehensive 3D SR, TID 1500 Measurement Report: cirrhosis finding and liver measurements."""

from __future__ import annotations

import logging

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pipeline.errors import PipelineError
from pipeline.outputs.common import (
    MANUFACTURER,
    RESEARCH_USE_ONLY,
    SERIES_NUMBERS,
    algorithm_identification,
    contributing_equipment,
    device_serial_number,
    is_demo,
    model_name,
    series_description,
    software_versions,
    stamp_identity,
    with_patient_study,
)
from pipeline.outputs.seg import LIVER_SEGMENT_NUMBER
from pipeline.outputs.text import (
    QUALITATIVE_EVALUATIONS,
    device_observation_context,
    finding_sentence,
    models_sentence,
    slice_sentence,
    text_item,
)
from pipeline.results import Classification, EvaluatedResult, ModelInfo

logger = logging.getLogger(__name__)

#: DCM 122157. PS3.16 gives its meaning as "Probability" (not "Probability of cancer", 111047).
PROBABILITY = hd.sr.CodedConcept(value="122157", scheme_designator="DCM", meaning="Probability")
UNITLESS = hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")
SQUARE_MILLIMETER = hd.sr.CodedConcept(value="mm2", scheme_designator="UCUM", meaning="mm2")
MILLILITER = hd.sr.CodedConcept(value="ml", scheme_designator="UCUM", meaning="ml")
CIRRHOSIS = codes.SCT.CirrhosisOfLiver  # SCT 19943007
PRESENT = codes.SCT.Present  # SCT 52101004
ABSENT = codes.SCT.Absent  # SCT 272519000


def _classification_parameters(classification: Classification) -> list[str]:
    source = "whole slice (no liver mask)" if classification.mode == "whole" else "liver-masked"
    return [
        f"input={source} caudate-level slice",
        f"threshold={classification.threshold:g}",
    ]


def finding_group(
    classification: Classification, model: ModelInfo, caudate_image: Dataset
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 image-level group: Cirrhosis of liver Present/Absent with its probability."""
    algorithm = algorithm_identification(model, _classification_parameters(classification))
    probability = hd.sr.Measurement(
        name=PROBABILITY,
        value=float(classification.probability),
        unit=UNITLESS,
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=str(generate_uid()), identifier="Cirrhosis classification"
        ),
        finding_type=CIRRHOSIS,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Liver)],
        algorithm_id=algorithm,
        measurements=[probability],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=CIRRHOSIS, value=PRESENT if classification.present else ABSENT
            )
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(caudate_image)],
    )


def liver_group(
    result: EvaluatedResult, seg: Dataset | None, model: ModelInfo, caudate_image: Dataset
) -> (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
):
    """Liver area on the caudate-level slice and liver volume.

    With a SEG: a TID 1411 group on its liver segment (sharing the segment's Tracking UID).
    Without one (a destination that takes the SR but not the SEG): a TID 1501 group with finding
    type Liver, so the report never points at an object the PACS does not have.
    """
    assert result.segmentation is not None
    assert result.caudate is not None
    assert result.volume is not None
    area = hd.sr.Measurement(
        name=codes.SCT.Area,
        value=float(result.caudate.liver_area_mm2),
        unit=SQUARE_MILLIMETER,
        referenced_images=[hd.sr.SourceImageForMeasurement.from_source_image(caudate_image)],
    )
    volume = hd.sr.Measurement(
        name=codes.SCT.Volume,
        value=float(result.segmentation.volume_ml),
        unit=MILLILITER,
    )
    if seg is None:
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=str(generate_uid()), identifier="Liver segmentation"
            ),
            finding_type=codes.SCT.Liver,
            finding_category=codes.SCT.AnatomicalStructure,
            algorithm_id=algorithm_identification(model),
            measurements=[area, volume],
        )
    segment = seg.SegmentSequence[LIVER_SEGMENT_NUMBER - 1]
    tracking_uid = str(segment.get("TrackingUID") or generate_uid())
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier="Liver segmentation"
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=LIVER_SEGMENT_NUMBER,
            source_series=hd.sr.SourceSeriesForSegmentation(result.volume.series_instance_uid),
        ),
        finding_type=codes.SCT.Liver,
        finding_category=codes.SCT.AnatomicalStructure,
        algorithm_id=algorithm_identification(model),
        measurements=[area, volume],
    )


def _notes(result: EvaluatedResult, caudate_image: Dataset) -> list[hd.sr.TextContentItem]:
    assert result.classification is not None
    classification = result.classification
    notes = [
        text_item(codes.DCM.Finding, finding_sentence(classification)),
        text_item(codes.DCM.Comment, slice_sentence(caudate_image)),
    ]
    if classification.mode == "whole":
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
    slice in the image library (TID 1600); a TID 1501 group with "Cirrhosis of liver" Present/
    Absent and its probability (DCM 122157, UCUM "1") from the classification algorithm (TID 4019);
    a TID 1411 group referencing the SEG's liver segment with the liver area on the caudate slice
    (SCT 42798000, mm2) and the liver volume (SCT 118565006, ml) (a TID 1501 group when there is
    no SEG); and a Qualitative Evaluations
    container (TID 1500 row 12) with plain-text statements of the finding, slice and models.

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
        or classification is None
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
    report = hd.sr.MeasurementReport(
        observation_context=device_observation_context(cls_model),
        procedure_reported=codes.LN.MRIUnspecifiedBodyRegion,
        imaging_measurements=[
            finding_group(classification, cls_model, caudate_image),
            liver_group(result, seg, seg_model, caudate_image),
        ],
        referenced_images=[caudate_image],
    )
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(_notes(result, caudate_image))
    report[0].ContentSequence.append(container)
    demo = is_demo(cls_model, seg_model)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[caudate_image] if seg is None else [caudate_image, seg],
        content=report[0],
        series_instance_uid=str(generate_uid()),
        series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=str(generate_uid()),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=series_description("SR", demo=demo),
        manufacturer_model_name=model_name(cls_model),
        software_versions=software_versions(cls_model, software_version)[0],
        device_serial_number=device_serial_number(cls_model),
        contributing_equipment=contributing_equipment([cls_model, seg_model], software_version),
    )
    stamp_identity(sr, result.reference, model=cls_model, software_version=software_version)
    logger.info(
        "built SR %s referencing SEG %s (finding %s)",
        sr.SOPInstanceUID,
        seg.SOPInstanceUID if seg is not None else "none",
        classification.label,
    )
    return sr
