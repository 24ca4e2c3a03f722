"""The pipeline in one function: select -> load -> segment -> localise -> classify, each timed."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.bundle import load_bundle
from pipeline.caudate import DEFAULT_FRACTION, caudate_slice
from pipeline.demo_scope import (
    DEMO_SEGMENTATION_REFUSED,
    demo_finding_withheld,
    demo_segmentation_refusal,
    is_phantom_study,
)
from pipeline.errors import NotEvaluatedError
from pipeline.heatmap import HeatMap, HeatMapper
from pipeline.inference import ClassificationModel, SegmentationModel
from pipeline.results import (
    CaudateSlice,
    Classification,
    EvaluatedResult,
    LiverSegmentation,
    ModelInfo,
    NotEvaluatedResult,
    PipelineResult,
    SeriesSelection,
    Volume,
)
from pipeline.selection import load_rules, select_t2_series
from pipeline.study_headers import StudyHeaders
from pipeline.volume import load_volume

logger = logging.getLogger(__name__)

STAGES = ("select", "load", "segment", "localise", "classify")


@dataclass(frozen=True)
class PipelineOptions:
    """Options of one run that are not part of a model bundle (settings group ``pipeline``)."""

    caudate_fraction: float = DEFAULT_FRACTION
    selection_rules: Path | None = None
    heatmap: bool = False  # Grad-CAM of the classifier on the slice (pipeline.heatmap)


@dataclass
class Models:
    """The two networks, loaded once and reused for many studies."""

    segmentation: SegmentationModel
    classification: ClassificationModel
    _heat_mapper: HeatMapper | None = field(default=None, repr=False)

    def heat_mapper(self) -> HeatMapper:
        """The classifier's Grad-CAM (its own copy of the network, made on first use)."""
        if self._heat_mapper is None:
            self._heat_mapper = HeatMapper(self.classification.bundle, self.classification.device)
        return self._heat_mapper

    @classmethod
    def load(
        cls,
        segmentation: Path,
        classification: Path,
        device: str = "auto",
        runtime: str = "torch",
        cache: Path | None = None,
    ) -> Models:
        """Load and verify both bundles and build their networks on ``device`` for ``runtime``
        (``torch``, ``openvino`` on a CPU, or ``auto``: :func:`pipeline.inference.resolve_runtime`;
        ``cache`` keeps OpenVINO's converted networks between loads).

        Raises
        ------
        BundleError
            A bundle is missing, invalid, of the wrong task, or fails its checksums.
        """
        return cls(
            segmentation=SegmentationModel(
                load_bundle(segmentation), device, runtime=runtime, cache=cache
            ),
            classification=ClassificationModel(load_bundle(classification), device, runtime, cache),
        )


def run_pipeline(
    study: StudyHeaders,
    models: Models,
    options: PipelineOptions = PipelineOptions(),
) -> PipelineResult:
    """Evaluate one study: find the axial T2 series, segment the liver, classify cirrhosis.

    Stages, each timed into ``timings`` (seconds, keys ``select``, ``load``, ``segment``,
    ``localise``, ``classify`` for the stages that ran, and ``total``):

    1. select: :func:`pipeline.selection.select_t2_series` (rules from ``options``);
    2. load: :func:`pipeline.volume.load_volume` of the chosen series;
    3. segment: the segmentation network on every slice;
    4. localise: :func:`pipeline.caudate.caudate_slice`, the caudate-level slice;
    5. classify: the classification network on that slice and its liver mask.

    DEMO bundles speak only about the project's own phantom studies
    (:mod:`pipeline.demo_scope`): with a DEMO segmentation bundle any other study is not
    evaluated (``demo_model_real_study``, the reason says how to get a real model); with a
    DEMO classifier behind a real segmentation bundle the result is evaluated without a
    finding (``classification`` None, ``finding_withheld`` says why).

    Parameters
    ----------
    study
        Headers of the study's files (:func:`pipeline.study_headers.scan_study`).
    models
        The loaded networks.
    options
        Caudate fraction and selection rules file.

    Returns
    -------
    PipelineResult
        :class:`~pipeline.results.EvaluatedResult` with every stage's result; or
        :class:`~pipeline.results.NotEvaluatedResult` with ``reason_code``/``reason`` from the
        stage that found the study cannot be evaluated (``no_axial_t2`` when no series
        is eligible, ``liver_not_covered``, ``inconsistent_geometry``,
        ``demo_model_real_study``, ...) and whatever was computed before it.

    Raises
    ------
    PipelineError
        Any other failure (invalid selection rules, a network that cannot run, ...): the job
        fails with the error's code.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    selection = SeriesSelection(series_instance_uid=None, candidates=())
    volume: Volume | None = None
    segmentation: LiverSegmentation | None = None
    caudate: CaudateSlice | None = None
    classification: Classification | None = None
    heatmap: HeatMap | None = None
    finding_withheld: str | None = None
    not_evaluated: NotEvaluatedError | None = None
    try:
        with _timed(timings, "select"):
            rules = load_rules(options.selection_rules) if options.selection_rules else None
            selection = select_t2_series(study, rules)
            series_uid = _chosen_series(selection)
            series = study.series_by_uid(series_uid)
            phantom = is_phantom_study(study.reference(), series.headers)
            if models.segmentation.info.demo and not phantom:
                raise NotEvaluatedError(DEMO_SEGMENTATION_REFUSED, demo_segmentation_refusal())
        with _timed(timings, "load"):
            volume = load_volume(series)
        with _timed(timings, "segment"):
            segmentation = models.segmentation.predict(volume)
        with _timed(timings, "localise"):
            caudate = caudate_slice(volume, segmentation, fraction=options.caudate_fraction)
        if models.classification.info.demo and not phantom:
            finding_withheld = demo_finding_withheld()
        else:
            image, mask = volume.pixels[caudate.index], segmentation.mask[caudate.index]
            with _timed(timings, "classify"):
                classification = models.classification.predict(image, mask)
            if options.heatmap:
                with _timed(timings, "heatmap"):
                    heatmap = models.heat_mapper().heat_map(
                        models.classification.input_tensor(image, mask), image.shape, mask
                    )
    except NotEvaluatedError as err:
        not_evaluated = err
    timings["total"] = time.perf_counter() - started
    logger.info(
        "study %s: %s in %.2f s",
        study.study_instance_uid,
        f"not evaluated ({not_evaluated.code})" if not_evaluated else "evaluated",
        timings["total"],
    )
    if not_evaluated is not None:
        return NotEvaluatedResult(
            study_instance_uid=study.study_instance_uid,
            reference=study.reference(),
            selection=selection,
            reason_code=not_evaluated.code,
            reason=not_evaluated.message,
            volume=volume,
            segmentation=segmentation,
            caudate=caudate,
            segmentation_model=models.segmentation.info,
            classification_model=models.classification.info,
            timings=timings,
        )
    assert volume is not None
    assert segmentation is not None
    assert caudate is not None
    assert classification is not None or finding_withheld is not None
    return EvaluatedResult(
        study_instance_uid=study.study_instance_uid,
        reference=study.reference(),
        selection=selection,
        volume=volume,
        segmentation=segmentation,
        caudate=caudate,
        classification=classification,
        finding_withheld=finding_withheld,
        segmentation_model=models.segmentation.info,
        classification_model=models.classification.info,
        timings=timings,
        heatmap=heatmap,
    )


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - started


def _chosen_series(selection: SeriesSelection) -> str:
    if selection.series_instance_uid is not None:
        return selection.series_instance_uid
    why = "; ".join(
        f"{c.description or c.series_instance_uid}: {_rejection(c.reasons)}"
        for c in selection.candidates
    )
    raise NotEvaluatedError(
        "no_axial_t2",
        "no axial T2-weighted series in the study" + (f" ({why})" if why else ""),
    )


def _rejection(reasons: tuple[str, ...]) -> str:
    """The first reason the series was rejected for (the others are in the candidates)."""
    rejected = [r.removeprefix("rejected: ") for r in reasons if r.startswith("rejected: ")]
    return rejected[0] if rejected else "not eligible"


def result_to_json(result: PipelineResult) -> dict[str, Any]:
    """The result as plain data for ``liver-agent run --json`` and job records.

    Keys: ``evaluated``, ``reason_code``, ``reason``, ``study_instance_uid``, ``series``
    (UID and description of the chosen series), ``selection`` (every candidate),
    ``slice`` (index, SOP Instance UID, liver area, liver extent, rule), ``classification``
    (probability, label, threshold, mode), ``finding_withheld`` (why there is no finding when a
    DEMO classifier met a real study), ``liver_volume_ml``, ``models`` (name, version,
    DEMO flag of each) and ``timings`` (seconds per stage).
    """
    chosen = next(
        (
            c
            for c in result.selection.candidates
            if c.series_instance_uid == result.selection.series_instance_uid
        ),
        None,
    )
    caudate = result.caudate
    classification = result.classification if result.evaluated else None
    reason_code, reason = (None, None) if result.evaluated else (result.reason_code, result.reason)
    return {
        "evaluated": result.evaluated,
        "reason_code": reason_code,
        "reason": reason,
        "study_instance_uid": result.study_instance_uid,
        "series": None
        if chosen is None
        else {
            "series_instance_uid": chosen.series_instance_uid,
            "description": chosen.description,
            "slices": result.volume.shape[0] if result.volume is not None else None,
        },
        "selection": result.selection.to_json(),
        "slice": None
        if caudate is None
        else {
            "index": caudate.index,
            "sop_instance_uid": caudate.sop_instance_uid,
            "liver_area_mm2": round(caudate.liver_area_mm2, 1),
            "liver_first_index": caudate.liver_first_index,
            "liver_last_index": caudate.liver_last_index,
            "rule": caudate.rule,
        },
        "classification": None
        if classification is None
        else {
            "probability": round(classification.probability, 4),
            "label": classification.label,
            "present": classification.present,
            "threshold": classification.threshold,
            "mode": classification.mode,
        },
        "finding_withheld": result.finding_withheld,
        "heatmap": result.heatmap.to_json() if result.evaluated and result.heatmap else None,
        "liver_volume_ml": None
        if result.segmentation is None
        else round(result.segmentation.volume_ml, 1),
        "models": {
            "segmentation": _model_json(result.segmentation_model),
            "classification": _model_json(result.classification_model),
        },
        "timings": {stage: round(seconds, 4) for stage, seconds in result.timings.items()},
    }


def _model_json(info: ModelInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "name": info.name,
        "version": info.version,
        "architecture": info.architecture,
        "demo": info.demo,
        "sha256": info.sha256,
    }
