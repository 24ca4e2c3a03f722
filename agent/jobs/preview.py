"""The preview of a job: its caudate-level slice with the liver outline, as a PNG.

The slice is the spooled source instance (``Job.slice_sop_instance_uid``); the outline is the
frame of the job's DICOM SEG that references that instance (Derivation Image Sequence, PS3.3
C.7.6.16.2.6). The picture is the Secondary Capture's (same window, scale and outline).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session

from agent.errors import AgentError
from pipeline.outputs.render import OUTLINE_RGB, render_slice
from storage import jobs, queries
from storage.models import Job
from storage.spool import Spool

logger = logging.getLogger(__name__)

MIN_SIDE = 512

__all__ = ["OUTLINE_RGB", "PreviewUnavailable", "job_preview", "render", "seg_frame_mask"]


class PreviewUnavailable(AgentError):  # noqa: N818 - an expected answer (404), named for it
    """The job has no preview to show; ``message`` says why."""


def render(
    image: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    mask: npt.NDArray[np.bool_] | None,
    *,
    min_side: int = MIN_SIDE,
) -> bytes:
    """PNG of the slice with the liver outline, drawn as in the Secondary Capture
    (:func:`pipeline.outputs.render.render_slice`: same window, scale and outline)."""
    rgb = render_slice(image, mask if mask is not None and mask.any() else None, min_size=min_side)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _slice_pixels(ds: Dataset) -> npt.NDArray[np.float32]:
    pixels = np.asarray(ds.pixel_array)
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        pixels = pixels.mean(axis=-1)
    if pixels.ndim == 3:  # a multi-frame source: its first frame
        pixels = pixels[0]
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    out: npt.NDArray[np.float32] = (pixels.astype(np.float32) * slope + intercept).astype(
        np.float32
    )
    return out


def seg_frame_mask(seg: Dataset, source_sop_instance_uid: str) -> npt.NDArray[np.bool_] | None:
    """The SEG's mask of one source instance, or None if no frame references it.

    Frames of segment 1 only (the agent's SEG has one segment, "Liver").
    """
    frames = seg.get("PerFrameFunctionalGroupsSequence", [])
    index: int | None = None
    for number, frame in enumerate(frames):
        segment = frame.get("SegmentIdentificationSequence")
        if segment and int(segment[0].ReferencedSegmentNumber) != 1:
            continue
        for derivation in frame.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                if str(source.ReferencedSOPInstanceUID) == source_sop_instance_uid:
                    index = number
        if index is not None:
            break
    if index is None:
        return None
    pixels = np.asarray(seg.pixel_array)
    frame_pixels = pixels if pixels.ndim == 2 else pixels[index]
    return np.asarray(frame_pixels > 0, dtype=bool)


def _read(path: Path, what: str) -> Dataset:
    try:
        return dcmread(path)
    except FileNotFoundError as err:
        raise PreviewUnavailable("file_missing", f"the {what} file {path} is gone") from err
    except (InvalidDicomError, OSError, ValueError) as err:
        raise PreviewUnavailable("file_unreadable", f"cannot read the {what}: {err}") from err


def job_preview(session: Session, spool: Spool, job: Job) -> tuple[bytes, bool]:
    """Render a job's preview; return the PNG and whether the liver outline is drawn.

    Raises
    ------
    PreviewUnavailable
        ``no_result`` when the job has no chosen slice (not run yet, not evaluated, failed);
        ``source_missing`` / ``file_missing`` / ``file_unreadable`` when the slice is gone.
    """
    uid = job.slice_sop_instance_uid
    if uid is None:
        raise PreviewUnavailable(
            "no_result", f"job {job.id} has no result slice (status {job.status})"
        )
    found = queries.instance_file(session, uid)
    if found is None:
        raise PreviewUnavailable(
            "source_missing", f"the slice {uid} of job {job.id} is not in the spool any more"
        )
    source = _read(spool.path_of(found[0]), "source slice")
    try:
        image = _slice_pixels(source)
    except (AttributeError, ValueError, RuntimeError) as err:
        raise PreviewUnavailable(
            "file_unreadable", f"cannot decode the pixels of slice {uid}: {err}"
        ) from err
    mask: npt.NDArray[np.bool_] | None = None
    seg_path = jobs.seg_output_path(session, job.id)
    if seg_path is not None and Path(seg_path).exists():
        seg = _read(Path(seg_path), "SEG")
        try:
            mask = seg_frame_mask(seg, uid)
        except (AttributeError, ValueError, RuntimeError) as err:
            logger.warning("job %s: cannot read the SEG frame of %s: %s", job.id, uid, err)
        if mask is None:
            mask = np.zeros(image.shape, dtype=bool)  # frame omitted: no liver on this slice
        elif mask.shape != image.shape:
            logger.warning(
                "job %s: SEG frame %s does not match the slice %s", job.id, mask.shape, image.shape
            )
            mask = None
    return render(image, mask), mask is not None
