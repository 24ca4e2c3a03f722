"""Result objects for the viewer: DICOM SEG, TID 1500 SR, "not evaluated" SR, Secondary Capture,
Key Object Selection."""

from pipeline.outputs.kos import build_kos
from pipeline.outputs.not_evaluated import build_not_evaluated_sr
from pipeline.outputs.result_objects import (
    KINDS,
    OutputOptions,
    ResultObject,
    build_outputs,
    write_outputs,
)
from pipeline.outputs.sc import build_sc
from pipeline.outputs.seg import build_seg
from pipeline.outputs.sr import build_sr

__all__ = [
    "KINDS",
    "OutputOptions",
    "ResultObject",
    "build_kos",
    "build_not_evaluated_sr",
    "build_outputs",
    "build_sc",
    "build_seg",
    "build_sr",
    "write_outputs",
]
