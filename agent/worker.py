"""Workers: claim a queued job, run the pipeline on its spooled files, write the result
objects, and record the result (outputs, deliveries, the job's next state via the lifecycle)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from agent import deployment, input_drift
from agent.errors import AgentError
from agent.jobs import lifecycle
from agent.jobs.heatmap import write_heatmap_png
from agent.jobs.lifecycle import ClaimedJob
from agent.jobs.routing import PlannedObject, build_objects, destinations_for, wanted_kinds
from agent.metrics import Metrics
from agent.model_provider import ModelProvider
from agent.settings import Destination, Settings
from agent.t2_first import SNAPSHOT_KEY, snapshot_limit
from pipeline.errors import PipelineError
from storage import jobs, queries
from storage.models import EventKind, Job, Output, OutputKind
from storage.spool import Spool

if TYPE_CHECKING:
    from pipeline.results import PipelineResult

logger = logging.getLogger(__name__)


class Worker:
    """Runs queued jobs one at a time until ``stop`` is set: claim -> run the pipeline ->
    write the result objects -> record the result.

    Parameters
    ----------
    settings
        All settings (pipeline options, destinations, results folder).
    sessions
        Session factory.
    spool
        Where the study's instances are.
    models
        Provides the loaded networks.
    metrics
        Stage histograms and job counters.
    wake
        Set when a job may be waiting (completion, retry); the worker also polls.
    name
        Worker name recorded on the job.
    on_delivering
        Called after a job's deliveries were queued (wakes the deliverer).
    """

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        spool: Spool,
        models: ModelProvider,
        metrics: Metrics,
        wake: threading.Event,
        name: str,
        on_delivering: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.spool = spool
        self.models = models
        self.metrics = metrics
        self.wake = wake
        self.name = name
        self.on_delivering = on_delivering
        self.results_root = settings.results.path

    def run_forever(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        while not stop.is_set():
            try:
                ran = self.run_one()
            except Exception:  # the worker thread must survive any single job
                logger.exception("worker %s: unexpected error outside a job", self.name)
                ran = False
            if not ran:
                self.wake.wait(poll_seconds)
                self.wake.clear()

    def run_one(self) -> bool:
        """Claim and run one job; False when none was queued."""
        if not self.models.ready and self.models.error is None:
            return False  # keep jobs queued until the models are loaded
        with self.sessions.begin() as session:
            claimed = lifecycle.claim_next(session, worker=self.name)
        if claimed is None:
            return False
        logger.info("job %s: running (worker %s)", claimed.job_id, self.name)
        with self._heartbeat(claimed.job_id):
            try:
                result = self.run_pipeline(claimed)
                self.publish(claimed, result)
            except (AgentError, PipelineError) as err:
                self._fail(claimed.job_id, err.code, err.message)
            except Exception as err:  # a bug must fail the job, not kill the worker
                logger.exception("job %s: internal error", claimed.job_id)
                self._fail(claimed.job_id, "internal_error", f"{type(err).__name__}: {err}")
        return True

    def run_pipeline(self, claimed: ClaimedJob) -> PipelineResult:
        """Run the pipeline on the claimed job's spooled instances.

        Raises
        ------
        PipelineError
            A stage could not produce its result (the job fails with its code).
        ModelUnavailableError
            The networks could not be loaded.
        """
        from pipeline.run import PipelineOptions, run_pipeline
        from pipeline.study_headers import scan_study

        with self.sessions() as session:
            job = session.get_one(Job, claimed.job_id)
            limit = snapshot_limit(job.details)  # a T2-first job: the instances it started on
            paths = [
                self.spool.path_of(p)
                for p in queries.instance_paths(session, claimed.study_id, up_to_instance_id=limit)
            ]
        models = self.models.get(timeout=0)
        options = PipelineOptions(
            caudate_fraction=self.settings.pipeline.caudate_fraction,
            selection_rules=self.settings.pipeline.selection_rules,
            heatmap=self.settings.heatmap.enabled,
        )
        return run_pipeline(scan_study(paths), models, options)

    def publish(self, claimed: ClaimedJob, result: PipelineResult) -> None:
        """Write the result objects for the study's destinations and record the result:
        outputs, one delivery per destination, stage timings, and the job's next state."""
        from pipeline.outputs import write_outputs

        started = time.perf_counter()
        destinations = destinations_for(self.settings, claimed.source_ae)
        planned = build_objects(result, destinations)
        self._mark_replacement(claimed.job_id, planned)
        folder = self.results_root / claimed.study_instance_uid / str(claimed.job_id)
        paths = write_outputs([p.obj for p in planned], folder)
        heatmap = write_heatmap_png(result, folder)
        encode_seconds = time.perf_counter() - started
        written = list(zip(planned, paths, strict=True))
        deliveries = self._record(
            claimed.job_id, result, destinations, written, encode_seconds, heatmap
        )
        if deliveries and self.on_delivering is not None:
            self.on_delivering()

    def _mark_replacement(self, job_id: int, planned: list[PlannedObject]) -> None:
        """Objects of a version that replaces one already delivered say so (series number,
        description, the earlier SR referenced: :mod:`pipeline.outputs.replacement`)."""
        from pipeline.outputs.replacement import EarlierResult, mark_replacement

        with self.sessions() as session:
            found = jobs.delivered_earlier_version(session, job_id)
            if found is None:
                return
            earlier_job, sr, sent_at = found
            earlier = EarlierResult(
                version=earlier_job.version,
                replaced_by=session.get_one(Job, job_id).version,
                study_instance_uid=earlier_job.study.study_instance_uid,
                sr_sop_class_uid=sr.sop_class_uid if sr is not None else None,
                sr_sop_instance_uid=sr.sop_instance_uid if sr is not None else None,
                sr_series_instance_uid=sr.series_instance_uid if sr is not None else None,
                delivered_at=sent_at.strftime("%Y-%m-%d %H:%M UTC") if sent_at else None,
            )
        for item in planned:
            mark_replacement(item.obj.dataset, earlier)
        logger.info(
            "job %s: results marked %s (job %s was delivered)",
            job_id,
            earlier.label,
            earlier_job.id,
        )

    @contextlib.contextmanager
    def _heartbeat(self, job_id: int) -> Iterator[None]:
        """Beat the job's heartbeat while the block runs (a stopped beat re-queues the job)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.settings.worker.heartbeat_seconds):
                with self.sessions.begin() as session:
                    jobs.heartbeat(session, job_id)

        thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _fail(self, job_id: int, code: str, message: str) -> None:
        with self.sessions.begin() as session:
            status = lifecycle.fail(session, session.get_one(Job, job_id), code, message)
        if status is not None:
            self.metrics.jobs_finished.labels(status.value).inc()
            logger.warning("job %s failed: %s (%s)", job_id, message, code)

    def _record(
        self,
        job_id: int,
        result: PipelineResult,
        destinations: list[Destination],
        written: list[tuple[PlannedObject, Path]],
        encode_seconds: float,
        heatmap: dict[str, Any] | None = None,
    ) -> int:
        """Record the result in one transaction; return how many deliveries were queued."""
        with self.sessions.begin() as session:
            job = session.get_one(Job, job_id)
            if not lifecycle.still_running(session, job):
                return 0
            _store_result(job, result)
            drift = input_drift.job_drift(result, self.models.models, self.settings.drift)
            if drift is not None:
                job.details = {**(job.details or {}), "drift": drift}
            if heatmap is not None:
                job.details = {**(job.details or {}), "heatmap": heatmap}
            timings = dict(result.timings)
            timings["encode"] = encode_seconds
            for stage, seconds in timings.items():
                jobs.record_stage(session, job_id, stage, seconds)
                self.metrics.stage_seconds.labels(stage).observe(seconds)
            outputs: list[tuple[PlannedObject, Output]] = []
            for planned, path in written:
                obj = planned.obj
                row = jobs.add_output(
                    session,
                    job_id,
                    kind=OutputKind(obj.kind),
                    sop_class_uid=obj.sop_class_uid,
                    sop_instance_uid=obj.sop_instance_uid,
                    series_instance_uid=obj.series_instance_uid,
                    path=str(path),
                    size_bytes=path.stat().st_size,
                )
                outputs.append((planned, row))
            session.flush()
            silent = deployment.silent_reason(
                session, self.settings.model, _model_names(result, self.models)
            )
            deliveries = 0
            plans = {id(p.plan): p.plan for p, _ in outputs if p.plan is not None}
            if silent is not None:
                plans = {}  # results kept (outputs above), sent nowhere
                job.details = {**(job.details or {}), "deployment": _silent_details(silent)}
                jobs.add_event(
                    session,
                    job_id,
                    EventKind.SILENT_MODE,
                    silent,
                    {"sent": False, "destinations_skipped": len(destinations)},
                )
            for key, plan in plans.items():
                rows = [row for p, row in outputs if id(p.plan) == key]
                for destination in plan.destinations:
                    kinds = wanted_kinds(destination, result.evaluated)
                    items = [r for r in rows if r.kind in kinds]
                    if items:
                        jobs.add_delivery(session, job_id, destination.name, items)
                        deliveries += 1
            summary = _summary(result)
            jobs.add_event(session, job_id, EventKind.RESULT, summary, _result_event(result))
            if silent is None and not deliveries and not destinations:
                jobs.add_event(
                    session,
                    job_id,
                    EventKind.DELIVERIES,
                    "no destination for this study (none configured for its source AE); "
                    "results kept in the results folder",
                )
            status = lifecycle.record_result(
                session,
                job,
                evaluated=result.evaluated,
                deliveries=deliveries,
                silent_reason=silent,
            )
            if deliveries:
                jobs.add_event(
                    session, job_id, EventKind.DELIVERIES, f"{deliveries} deliveries queued"
                )
        if status.is_final:
            self.metrics.jobs_finished.labels(status.value).inc()
        if drift is not None:
            outcome = input_drift.count(self.metrics, drift)
            if outcome == input_drift.FLAGGED:
                logger.warning("job %s: input drift: %s", job_id, "; ".join(drift["reasons"]))
        logger.info("job %s: %s", job_id, summary)
        return deliveries


def _model_names(result: PipelineResult, provider: ModelProvider) -> list[str]:
    """The bundles of the job (their deployment modes decide whether its results are sent):
    those that made the result, and the loaded pair (a study not evaluated before a network
    ran is still that pair's job)."""
    names = [m.name for m in (result.segmentation_model, result.classification_model) if m]
    loaded = provider.models
    if loaded is not None:
        names += [loaded.segmentation.info.name, loaded.classification.info.name]
    return list(dict.fromkeys(names))


def _silent_details(reason: str) -> dict[str, Any]:
    return {"mode": "silent", "sent": False, "reason_code": "silent_mode", "reason": reason}


def _summary(result: PipelineResult) -> str:
    if not result.evaluated:
        return f"not evaluated: {result.reason} ({result.reason_code})"
    if result.classification is None:
        return (
            f"liver segmented, no finding (DEMO classifier on a real study) on slice "
            f"{result.caudate.index} of series {result.selection.series_instance_uid}"
        )
    return (
        f"{result.classification.label} (p={result.classification.probability:.3f}) on slice "
        f"{result.caudate.index} of series {result.selection.series_instance_uid}"
    )


def _result_event(result: PipelineResult) -> dict[str, Any]:
    return {
        "evaluated": result.evaluated,
        "reason_code": None if result.evaluated else result.reason_code,
        "timings": result.timings,
    }


def _store_result(job: Job, result: PipelineResult) -> None:
    job.evaluated = result.evaluated
    job.series_instance_uid = result.selection.series_instance_uid
    if not result.evaluated:
        job.reason_code = result.reason_code
        job.reason = result.reason
    details: dict[str, Any] = {"selection": result.selection.to_json()}
    if not result.evaluated:  # the reason shown again after a failed delivery was retried
        details["not_evaluated"] = {"reason_code": result.reason_code, "reason": result.reason}
    if result.volume is not None:
        details["series_description"] = str(result.volume.headers[0].get("SeriesDescription", ""))
        details["slices"] = result.volume.shape[0]
    if result.caudate is not None:
        job.slice_index = result.caudate.index
        job.slice_sop_instance_uid = result.caudate.sop_instance_uid
        job.liver_area_mm2 = result.caudate.liver_area_mm2
        details["profile_mm2"] = list(result.caudate.profile_mm2)
        details["caudate_rule"] = result.caudate.rule
        details["liver_extent"] = [
            result.caudate.liver_first_index,
            result.caudate.liver_last_index,
        ]
    if result.segmentation is not None:
        job.liver_volume_ml = result.segmentation.volume_ml
    if result.evaluated and result.classification is not None:
        job.probability = result.classification.probability
        job.label = result.classification.label
        details["classification_mode"] = result.classification.mode
        details["threshold"] = result.classification.threshold
    if result.evaluated and result.finding_withheld is not None:
        details["finding_withheld"] = result.finding_withheld
    models = [m for m in (result.segmentation_model, result.classification_model) if m]
    if result.classification_model is not None:
        job.model_name = result.classification_model.name
        job.model_version = result.classification_model.version
    job.model_demo = any(m.demo for m in models) if models else None
    details["models"] = [
        {
            "task": m.task,
            "name": m.name,
            "version": m.version,
            "demo": m.demo,
            "architecture": m.architecture,
        }
        for m in models
    ]
    if SNAPSHOT_KEY in (job.details or {}):  # T2-first: what the job started on
        details[SNAPSHOT_KEY] = (job.details or {})[SNAPSHOT_KEY]
    job.details = details
