"""Typed results that pipeline stages pass to each other and to the agent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

if TYPE_CHECKING:
    from pipeline.heatmap import HeatMap


@dataclass(frozen=True)
class SeriesCandidate:
    """One series of the study as the selector saw it."""

    series_instance_uid: str
    description: str
    score: float
    eligible: bool
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "series_instance_uid": self.series_instance_uid,
            "description": self.description,
            "score": self.score,
            "eligible": self.eligible,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class SeriesSelection:
    """The chosen axial T2-weighted series (or None) and every candidate's score and reasons."""

    series_instance_uid: str | None
    candidates: tuple[SeriesCandidate, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "series_instance_uid": self.series_instance_uid,
            "candidates": [c.to_json() for c in self.candidates],
        }


@dataclass(frozen=True, eq=False)
class Volume:
    """One series as a 3D array with its geometry, slices sorted along the slice normal.

    ``pixels[k]`` is the k-th slice (rows x columns) in stored-value units after rescale;
    ``headers[k]`` is its dataset without pixel data.
    """

    series_instance_uid: str
    pixels: npt.NDArray[np.float32]
    headers: tuple[Dataset, ...]
    positions: npt.NDArray[np.float64]  # (n, 3) ImagePositionPatient, mm
    row_cosine: npt.NDArray[np.float64]  # (3,)
    column_cosine: npt.NDArray[np.float64]  # (3,)
    pixel_spacing: tuple[float, float]  # (between rows, between columns), mm
    slice_spacing: float  # mm, along the normal
    frame_of_reference_uid: str

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        return tuple(str(h.SOPInstanceUID) for h in self.headers)

    @property
    def normal(self) -> npt.NDArray[np.float64]:
        return np.cross(self.row_cosine, self.column_cosine)

    @property
    def shape(self) -> tuple[int, int, int]:
        n, r, c = self.pixels.shape
        return n, r, c


@dataclass(frozen=True, eq=False)
class LiverSegmentation:
    """Binary liver mask of a volume, with the area of each slice and the volume."""

    mask: npt.NDArray[np.bool_]  # (n, rows, columns)
    area_mm2: npt.NDArray[np.float64]  # (n,)
    volume_ml: float


@dataclass(frozen=True)
class CaudateSlice:
    """The slice at the level of the caudate lobe, and how it was found."""

    index: int
    sop_instance_uid: str
    liver_area_mm2: float
    profile_mm2: tuple[float, ...]
    liver_first_index: int
    liver_last_index: int
    rule: str


@dataclass(frozen=True)
class Classification:
    """Cirrhosis on the caudate-level slice."""

    probability: float
    present: bool
    threshold: float
    mode: str  # "masked" (upstream segmentation) or "whole" (whole slice)

    @property
    def label(self) -> str:
        return "cirrhosis" if self.present else "no cirrhosis"


@dataclass(frozen=True)
class ModelInfo:
    """What an output must say about the network that made it (from the bundle manifest)."""

    name: str
    version: str
    task: str
    architecture: str
    demo: bool
    sha256: str


@dataclass(frozen=True, eq=False)
class EvaluatedResult:
    """A study the pipeline evaluated: the result of every stage.

    ``evaluated`` is always True; with :class:`NotEvaluatedResult` it makes
    :data:`PipelineResult` a tagged union (``if result.evaluated:`` narrows it).

    ``classification`` is None only when ``finding_withheld`` says why: a DEMO classifier met a
    study that is not one of the project's phantoms (:mod:`pipeline.demo_scope`); the
    segmentation still stands.
    """

    study_instance_uid: str
    reference: Dataset  # a header of the study (patient/study attributes for outputs)
    selection: SeriesSelection
    volume: Volume
    segmentation: LiverSegmentation
    caudate: CaudateSlice
    classification: Classification | None
    finding_withheld: str | None = None
    segmentation_model: ModelInfo | None = None
    classification_model: ModelInfo | None = None
    timings: dict[str, float] = field(default_factory=dict)
    evaluated: Literal[True] = True
    heatmap: HeatMap | None = None  # where the classifier looked (pipeline.heatmap)

    @property
    def reason_code(self) -> None:
        """None: an evaluated study has no reason for not being evaluated."""
        return None

    @property
    def reason(self) -> None:
        """None, as :attr:`reason_code`."""
        return None


@dataclass(frozen=True, eq=False)
class NotEvaluatedResult:
    """A study the pipeline could not evaluate: why (``reason_code``, ``reason``) and what the
    stages before the one that stopped had found (``volume``, ``segmentation``, ``caudate``)."""

    study_instance_uid: str
    reference: Dataset
    selection: SeriesSelection
    reason_code: str
    reason: str
    volume: Volume | None = None
    segmentation: LiverSegmentation | None = None
    caudate: CaudateSlice | None = None
    segmentation_model: ModelInfo | None = None
    classification_model: ModelInfo | None = None
    timings: dict[str, float] = field(default_factory=dict)
    evaluated: Literal[False] = False

    @property
    def classification(self) -> None:
        """None: a study that was not evaluated has no classification."""
        return None

    @property
    def finding_withheld(self) -> None:
        """None: nothing was withheld, there was no finding to give (see ``reason``)."""
        return None


PipelineResult: TypeAlias = EvaluatedResult | NotEvaluatedResult
"""What :func:`pipeline.run.run_pipeline` returns: evaluated, or not evaluated with a reason."""
