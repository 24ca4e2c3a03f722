"""Which result objects a job makes (per destination options), and writing them as Part 10 files."""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from pipeline.errors import PipelineError
from pipeline.outputs.identity import agent_version
from pipeline.outputs.kos import build_kos
from pipeline.outputs.not_evaluated import build_not_evaluated_sr
from pipeline.outputs.sc import build_sc
from pipeline.outputs.seg import build_seg
from pipeline.outputs.sr import build_sr
from pipeline.results import PipelineResult

logger = logging.getLogger(__name__)

KINDS = ("seg", "sr", "sc", "kos", "not_evaluated_sr")


@dataclass(frozen=True)
class OutputOptions:
    """Which objects to make for one destination.

    Attributes
    ----------
    seg, sr, sc, kos
        Make the SEG, the TID 1500 SR (which references the SEG when both are made), the
        Secondary Capture and the Key Object Selection (the caudate-level slice as key image)
        for evaluated studies.
    not_evaluated_sr
        Make the "not evaluated" SR for studies the pipeline could not evaluate.
    omit_empty_frames
        Leave SEG frames without liver out (some viewers misplace such SEGs: default keep).
    sc_heatmap
        Lay the classifier's heat map over the Secondary Capture's slice (when the result has
        one).
    """

    seg: bool = True
    sr: bool = True
    sc: bool = False
    kos: bool = False
    not_evaluated_sr: bool = True
    omit_empty_frames: bool = False
    sc_heatmap: bool = False


@dataclass(frozen=True, eq=False)
class ResultObject:
    """One result object ready to send: its kind and its dataset (with file meta)."""

    kind: str  # one of KINDS
    dataset: Dataset

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)


def build_outputs(
    result: PipelineResult,
    options: OutputOptions = OutputOptions(),
    *,
    software_version: str | None = None,
) -> list[ResultObject]:
    """Build the result objects of a pipeline result.

    Evaluated: SEG, SR (referencing the SEG's liver segment; without the SEG option the SR
    carries the liver volume in an image-level group instead), SC and KOS as ``options`` say.
    Not evaluated: the "not evaluated" SR when ``options.not_evaluated_sr``. Every object gets
    fresh UIDs.

    Parameters
    ----------
    result
        The pipeline's result for one study.
    options
        The destination's choices.
    software_version
        liver-agent version to write (default: the installed package version).

    Returns
    -------
    list of ResultObject
        In the order they should be sent: SEG before the SR that references it.

    Raises
    ------
    PipelineError
        ``output_encoding`` when an object cannot be encoded from the result.
    """
    version = software_version or agent_version()
    if not result.evaluated:
        if not options.not_evaluated_sr:
            return []
        return [
            ResultObject(
                "not_evaluated_sr", build_not_evaluated_sr(result, software_version=version)
            )
        ]
    objects: list[ResultObject] = []
    try:
        seg = None
        if options.seg:
            seg = build_seg(
                result, software_version=version, omit_empty_frames=options.omit_empty_frames
            )
            objects.append(ResultObject("seg", seg))
        if options.sr:
            objects.append(ResultObject("sr", build_sr(result, seg, software_version=version)))
        if options.sc:
            objects.append(
                ResultObject(
                    "sc", build_sc(result, software_version=version, heatmap=options.sc_heatmap)
                )
            )
        if options.kos:
            objects.append(ResultObject("kos", build_kos(result, software_version=version)))
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise PipelineError(
            "output_encoding",
            f"a result object could not be encoded for study {result.study_instance_uid}: {err}",
        ) from err
    return objects


def write_outputs(objects: Sequence[ResultObject], out_dir: Path) -> list[Path]:
    """Write result objects as DICOM Part 10 files, each atomically (temp file, fsync, rename).

    A kind that occurs once is written as ``<kind>.dcm``; kinds that repeat as
    ``<kind>-<SOPInstanceUID>.dcm``.

    Parameters
    ----------
    objects
        Objects from :func:`build_outputs`.
    out_dir
        Folder to write into (created when missing).

    Returns
    -------
    list of Path
        The written files, in the order of ``objects``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = Counter(obj.kind for obj in objects)
    paths: list[Path] = []
    for obj in objects:
        name = (
            f"{obj.kind}.dcm" if counts[obj.kind] == 1 else f"{obj.kind}-{obj.sop_instance_uid}.dcm"
        )
        path = out_dir / name
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                obj.dataset.save_as(handle, enforce_file_format=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        paths.append(path)
        logger.info("wrote %s %s to %s", obj.kind, obj.sop_instance_uid, path)
    _fsync_dir(out_dir)
    return paths


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
