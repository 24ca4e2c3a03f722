"""Input drift of a job: the selected series' header values against the training distribution
of each loaded bundle (:func:`pipeline.drift.check_drift`), kept as ``job.details["drift"]``
and counted in the metrics."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agent.metrics import Metrics
from agent.settings import DriftSettings
from pipeline.drift import DriftTolerance, check_drift, drift_summary
from pipeline.input_distribution import AcquisitionValues

if TYPE_CHECKING:
    from pipeline.results import PipelineResult
    from pipeline.run import Models

logger = logging.getLogger(__name__)

#: Outcomes counted in ``liver_agent_input_drift_checks_total``.
FLAGGED, IN_DISTRIBUTION, NO_DISTRIBUTION = "flagged", "in_distribution", "no_distribution"


def tolerance_of(settings: DriftSettings) -> DriftTolerance:
    """The pipeline's tolerances from the settings group ``drift``."""
    return DriftTolerance(
        manufacturer=settings.manufacturer,
        field_strength=settings.field_strength_tolerance,
        echo_time=settings.echo_time_tolerance,
        repetition_time=settings.repetition_time_tolerance,
        pixel_spacing=settings.pixel_spacing_tolerance,
        matrix=settings.matrix_tolerance,
    )


def job_drift(
    result: PipelineResult, models: Models | None, settings: DriftSettings
) -> dict[str, Any] | None:
    """``details["drift"]`` of a job: ``{"flagged", "reasons", "checked"}``; None when drift
    checks are off or no series was loaded (nothing to compare)."""
    if not settings.enabled or result.volume is None or models is None:
        return None
    values = AcquisitionValues.from_dataset(result.volume.headers[0])
    tolerance = tolerance_of(settings)
    checks = [
        check_drift(
            values,
            model.manifest.training_distribution,
            tolerance,
            model=f"{model.info.name} {model.info.version}",
        )
        for model in (models.segmentation, models.classification)
    ]
    return drift_summary(checks, values)


def count(metrics: Metrics, drift: dict[str, Any]) -> str:
    """Count one job's drift verdict (and each value outside its range); return the outcome."""
    if drift["flagged"]:
        outcome = FLAGGED
    elif drift["checked"].get("note"):
        outcome = NO_DISTRIBUTION
    else:
        outcome = IN_DISTRIBUTION
    metrics.drift_checks.labels(outcome).inc()
    for model in drift["checked"].get("models", []):
        for check in model.get("checks", []):
            if check.get("ok") is False:
                metrics.drift_values.labels(str(check["name"])).inc()
    return outcome
