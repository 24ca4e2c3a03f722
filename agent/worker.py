"""Workers: claim a queued job, run the pipeline on its spooled files, write the result
objects, and record outputs and one delivery per destination."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from agent import __version__
from agent.errors import AgentError
from agent.metrics import Metrics
from agent.models import ModelProvider
from agent.settings import Destination, Settings
from storage import queries
from storage.models import Delivery, DeliveryItem, Job, JobStatus, Output, Study, utcnow
from storage.spool import Spool

if TYPE_CHECKING:
    from pipeline.outputs import ResultObject
    from pipeline.types import PipelineResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputPlan:
    """Which result objects to build, and which destinations get which of them."""

    omit_empty_frames: bool
    destinations: tuple[Destination, ...]


def destinations_for(settings: Settings, source_ae: str | None) -> list[Destination]:
    """Destinations of a study: ``route: always`` ones, and ``route: source`` ones whose AE
    title is the one that sent the study (results go back to the sending PACS)."""
    chosen = []
    for destination in settings.destinations:
        if destination.route == "always" or (
            destination.ae_title is not None and destination.ae_title == source_ae
        ):
            chosen.append(destination)
    return chosen


def plan_outputs(destinations: list[Destination]) -> list[OutputPlan]:
    """Group destinations by SEG variant (empty frames kept or omitted)."""
    plans = []
    for omit in (False, True):
        group = tuple(d for d in destinations if d.seg_omit_empty_frames == omit)
        if group:
            plans.append(OutputPlan(omit, group))
    return plans


def wanted_kinds(destination: Destination, evaluated: bool) -> set[str]:
    if not evaluated:
        return {"not_evaluated_sr"} if destination.send.not_evaluated_sr else set()
    send = destination.send
    return {k for k, on in (("seg", send.seg), ("sr", send.sr), ("sc", send.sc)) if on}


class Worker:
    """Runs queued jobs one at a time until ``stop`` is set.

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
            job = queries.claim_next_job(session, worker=self.name)
            if job is None:
                return False
            job_id, study_id = job.id, job.study_id
        logger.info("job %s: running (worker %s)", job_id, self.name)
        stop_beat = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat,
            args=(job_id, stop_beat),
            name=f"heartbeat-{job_id}",
            daemon=True,
        )
        beat.start()
        try:
            self._run(job_id, study_id)
        except AgentError as err:
            self._fail(job_id, err.code, err.message)
        except Exception as err:  # a bug must fail the job, not kill the worker
            logger.exception("job %s: internal error", job_id)
            self._fail(job_id, "internal_error", f"{type(err).__name__}: {err}")
        finally:
            stop_beat.set()
            beat.join()
        return True

    def _heartbeat(self, job_id: int, stop: threading.Event) -> None:
        while not stop.wait(self.settings.worker.heartbeat_seconds):
            with self.sessions.begin() as session:
                queries.heartbeat(session, job_id)

    def _fail(self, job_id: int, code: str, message: str) -> None:
        with self.sessions.begin() as session:
            job = session.get_one(Job, job_id)
            if job.status.is_final:
                return
            queries.set_status(session, job, JobStatus.FAILED, reason_code=code, reason=message)
        self.metrics.jobs_finished.labels(JobStatus.FAILED.value).inc()
        logger.warning("job %s failed: %s (%s)", job_id, message, code)

    def _run(self, job_id: int, study_id: int) -> None:
        from pipeline.errors import PipelineError
        from pipeline.run import PipelineOptions, run_pipeline
        from pipeline.study import scan_study

        with self.sessions() as session:
            paths = [self.spool.path_of(p) for p in queries.instance_paths(session, study_id)]
            study = session.get_one(Study, study_id)
            source_ae = study.source_ae
        models = self.models.get(timeout=0)
        options = PipelineOptions(
            caudate_fraction=self.settings.pipeline.caudate_fraction,
            selection_rules=self.settings.pipeline.selection_rules,
        )
        try:
            headers = scan_study(paths)
            result = run_pipeline(headers, models, options)
        except PipelineError as err:
            self._fail(job_id, err.code, err.message)
            return
        started = time.perf_counter()
        destinations = destinations_for(self.settings, source_ae)
        objects = self._build_objects(result, destinations)
        written = self._write_objects(job_id, study.study_instance_uid, objects)
        encode_seconds = time.perf_counter() - started
        self._record(job_id, result, destinations, written, encode_seconds)

    def _build_objects(
        self, result: PipelineResult, destinations: list[Destination]
    ) -> list[tuple[OutputPlan | None, ResultObject]]:
        """Build each SEG variant's objects; with no destination, the default set is kept."""
        from pipeline.outputs import OutputOptions, build_outputs

        plans: list[OutputPlan | None] = list(plan_outputs(destinations)) or [None]
        built: list[tuple[OutputPlan | None, ResultObject]] = []
        for plan in plans:
            group = plan.destinations if plan is not None else ()
            options = OutputOptions(
                seg=not group or any(d.send.seg for d in group),
                sr=not group or any(d.send.sr for d in group),
                sc=any(d.send.sc for d in group),
                not_evaluated_sr=not group or any(d.send.not_evaluated_sr for d in group),
                omit_empty_frames=plan.omit_empty_frames if plan is not None else False,
            )
            for obj in build_outputs(result, options, software_version=__version__):
                built.append((plan, obj))
        return built

    def _write_objects(
        self, job_id: int, study_uid: str, objects: list[tuple[OutputPlan | None, ResultObject]]
    ) -> list[tuple[OutputPlan | None, ResultObject, Path]]:
        from pipeline.outputs import write_outputs

        folder = self.results_root / study_uid / str(job_id)
        paths = write_outputs([obj for _, obj in objects], folder)
        return [(plan, obj, path) for (plan, obj), path in zip(objects, paths, strict=True)]

    def _record(
        self,
        job_id: int,
        result: PipelineResult,
        destinations: list[Destination],
        written: list[tuple[OutputPlan | None, ResultObject, Path]],
        encode_seconds: float,
    ) -> None:
        with self.sessions.begin() as session:
            job = session.get_one(Job, job_id)
            if job.status != JobStatus.RUNNING:
                queries.add_event(
                    session,
                    job_id,
                    "discarded",
                    f"result discarded: job became {job.status} while running",
                )
                return
            _store_result(job, result)
            timings = dict(result.timings)
            timings["encode"] = encode_seconds
            for stage, seconds in timings.items():
                queries.record_stage(session, job_id, stage, seconds)
                self.metrics.stage_seconds.labels(stage).observe(seconds)
            outputs_by_plan: dict[int, list[Output]] = {}
            for plan, obj, path in written:
                row = Output(
                    job_id=job_id,
                    kind=obj.kind,
                    sop_class_uid=obj.sop_class_uid,
                    sop_instance_uid=obj.sop_instance_uid,
                    series_instance_uid=obj.series_instance_uid,
                    path=str(path),
                    size_bytes=path.stat().st_size,
                )
                session.add(row)
                outputs_by_plan.setdefault(id(plan), []).append(row)
            session.flush()
            plans = {id(p): p for p, _, _ in written}
            deliveries = 0
            for key, rows in outputs_by_plan.items():
                plan = plans[key]
                if plan is None:
                    continue
                for destination in plan.destinations:
                    kinds = wanted_kinds(destination, result.evaluated)
                    items = [r for r in rows if r.kind in kinds]
                    if not items:
                        continue
                    delivery = Delivery(
                        job_id=job_id, destination=destination.name, next_attempt_at=utcnow()
                    )
                    session.add(delivery)
                    session.flush()
                    session.add_all(
                        DeliveryItem(delivery_id=delivery.id, output_id=r.id) for r in items
                    )
                    deliveries += 1
            summary = _summary(result)
            queries.add_event(session, job_id, "result", summary, _result_event(result))
            if deliveries:
                queries.set_status(session, job, JobStatus.DELIVERING)
                queries.add_event(
                    session, job_id, "deliveries", f"{deliveries} deliveries queued", None
                )
            else:
                final = JobStatus.DONE if result.evaluated else JobStatus.NOT_EVALUATED
                if not destinations:
                    queries.add_event(
                        session,
                        job_id,
                        "deliveries",
                        "no destination for this study (none configured for its source AE); "
                        "results kept in the results folder",
                        None,
                    )
                queries.set_status(session, job, final)
                self.metrics.jobs_finished.labels(final.value).inc()
        logger.info("job %s: %s", job_id, summary)
        if deliveries and self.on_delivering is not None:
            self.on_delivering()


def _summary(result: PipelineResult) -> str:
    if not result.evaluated:
        return f"not evaluated: {result.reason} ({result.reason_code})"
    assert result.classification is not None
    assert result.caudate is not None
    return (
        f"{result.classification.label} (p={result.classification.probability:.3f}) on slice "
        f"{result.caudate.index} of series {result.selection.series_instance_uid}"
    )


def _result_event(result: PipelineResult) -> dict[str, Any]:
    return {
        "evaluated": result.evaluated,
        "reason_code": result.reason_code,
        "timings": result.timings,
    }


def _store_result(job: Job, result: PipelineResult) -> None:
    job.evaluated = result.evaluated
    job.series_instance_uid = result.selection.series_instance_uid
    if not result.evaluated:
        job.reason_code = result.reason_code
        job.reason = result.reason
    details: dict[str, Any] = {"selection": result.selection.to_json()}
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
    if result.classification is not None:
        job.probability = result.classification.probability
        job.label = result.classification.label
        details["classification_mode"] = result.classification.mode
        details["threshold"] = result.classification.threshold
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
    job.details = details
