"""DICOM SEG of the liver mask: one binary segment, one frame per source slice (PS3.3 A.51)."""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pipeline.errors import PipelineError
from pipeline.outputs.identity import (
    MANUFACTURER,
    RESEARCH_USE_ONLY,
    ResultIdentity,
    with_patient_study,
)
from pipeline.results import EvaluatedResult, ModelInfo

logger = logging.getLogger(__name__)

LIVER_SEGMENT_NUMBER = 1
LIVER_SEGMENT_LABEL = "Liver"


def liver_segment_description(model: ModelInfo | None) -> hd.seg.SegmentDescription:
    """Segment 1 "Liver": SCT 10200004 in category SCT 91723000 Anatomical Structure, AUTOMATIC."""
    if model is None:
        raise PipelineError(
            "output_encoding",
            "the result has no segmentation model information, so the SEG cannot name its "
            "algorithm; check the model bundle manifest",
        )
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=model.version,
        source=MANUFACTURER,
        parameters=_parameters(model),
    )
    return hd.seg.SegmentDescription(
        segment_number=LIVER_SEGMENT_NUMBER,
        segment_label=LIVER_SEGMENT_LABEL,
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=str(generate_uid()),
        tracking_id="Liver segmentation",
        display_color=hd.color.CIELabColor.from_rgb(221, 130, 101),
    )


def _parameters(model: ModelInfo) -> dict[str, str]:
    params = {"architecture": model.architecture, "task": model.task}
    if model.demo:
        params["bundle"] = "DEMO MODEL (trained on synthetic phantoms)"
    return params


def build_seg(
    result: EvaluatedResult,
    *,
    software_version: str,
    omit_empty_frames: bool = False,
) -> hd.seg.Segmentation:
    """Build the binary DICOM SEG of the liver mask of an evaluated result.

    One frame per slice of ``result.volume.headers`` (or per slice with liver when omitting):
    highdicom takes each frame's plane position and its Derivation Image / Source Image
    reference from that slice's header, orders the frames along the slice normal (head to feet
    for axial series; readers place frames by position, not by number), and copies the patient,
    study and Frame of Reference from the headers. Passing the mask as a bool array and letting
    highdicom derive the positions is the fastest of its options (see ``bench/encode.py``).

    Parameters
    ----------
    result
        An evaluated pipeline result with ``volume``, ``segmentation`` and ``segmentation_model``.
    software_version
        liver-agent version written in Software Versions.
    omit_empty_frames
        Leave out frames without liver (smaller; some viewers misplace such SEGs). When the mask
        is empty everywhere the frames are kept.

    Returns
    -------
    highdicom.seg.Segmentation
        The SEG instance (SOP Class Segmentation Storage), series number 9901.

    Raises
    ------
    PipelineError
        ``output_encoding`` when the result lacks the volume or mask, or they disagree in shape.
    """
    volume, segmentation = result.volume, result.segmentation
    if volume is None or segmentation is None:
        raise PipelineError(
            "output_encoding", "the result has no volume or liver mask to encode as a SEG"
        )
    mask = np.ascontiguousarray(segmentation.mask, dtype=bool)
    if mask.shape != volume.shape:
        raise PipelineError(
            "output_encoding",
            f"the liver mask shape {mask.shape} does not match the series shape {volume.shape}",
        )
    model = result.segmentation_model
    identity = ResultIdentity("seg", model, (model,), software_version)
    sources = [with_patient_study(h, result.reference) for h in volume.headers]
    omit = bool(omit_empty_frames and mask.any())
    description = "AI liver segmentation - " + RESEARCH_USE_ONLY
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[liver_segment_description(model)],
        content_label="LIVER_AI",
        content_description=f"DEMO MODEL {description}" if identity.demo else description,
        omit_empty_frames=omit,
        **identity.sop_arguments(),
    )
    identity.stamp(seg, result.reference)
    logger.info(
        "built SEG %s for series %s: %d of %d frames",
        seg.SOPInstanceUID,
        volume.series_instance_uid,
        int(seg.NumberOfFrames),
        mask.shape[0],
    )
    return seg


def source_frame_numbers(seg: Dataset) -> dict[str, int]:
    """Map each referenced source SOP Instance UID to its 1-based frame number in ``seg``."""
    out: dict[str, int] = {}
    for number, frame in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        for derivation in frame.DerivationImageSequence:
            for source in derivation.SourceImageSequence:
                out[str(source.ReferencedSOPInstanceUID)] = number
    return out
