"""The heat map of a job: where the classifier looked on the caudate-level slice, written as a
PNG beside the job's result objects (``details["heatmap"]["file"]``) and served to its page."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from agent.jobs.preview import MIN_SIDE, PreviewUnavailable
from pipeline.outputs.render import render_heatmap
from storage.models import Job

if TYPE_CHECKING:
    from pipeline.results import PipelineResult

logger = logging.getLogger(__name__)

FILE_NAME = "heatmap.png"


def write_heatmap_png(result: PipelineResult, folder: Path) -> dict[str, Any] | None:
    """Write the result's heat map over its slice to ``folder/heatmap.png``; return the job's
    ``details["heatmap"]`` (method, layer, class, share inside the liver, file), or None when
    the result has no heat map."""
    if not result.evaluated or result.heatmap is None:
        return None
    index = result.caudate.index
    rgb = render_heatmap(
        result.volume.pixels[index],
        result.segmentation.mask[index],
        result.heatmap.cam,
        min_size=MIN_SIDE,
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAME
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return {**result.heatmap.to_json(), "file": str(path)}


def job_heatmap(job: Job, results_root: Path) -> bytes:
    """The PNG of a job's heat map.

    Raises
    ------
    PreviewUnavailable
        ``no_heatmap`` when the job has none (not classified, heat maps off), ``file_missing``
        when its file was cleaned up.
    """
    found = (job.details or {}).get("heatmap")
    if not isinstance(found, dict) or not found.get("file"):
        raise PreviewUnavailable(
            "no_heatmap", f"job {job.id} has no heat map (no finding, or heat maps are off)"
        )
    path = Path(str(found["file"]))
    root = results_root.resolve()
    if not path.resolve().is_relative_to(root):
        raise PreviewUnavailable("file_missing", f"the heat map of job {job.id} is not kept")
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        raise PreviewUnavailable(
            "file_missing", f"the heat map of job {job.id} was cleaned up"
        ) from err
