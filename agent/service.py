"""The running agent: wires settings, database, spool, SCP, scheduler, workers and HTTP."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from agent.completion import complete_ready_studies
from agent.context import open_context
from agent.delivery import Deliverer
from agent.delivery_lanes import DeliveryLanes
from agent.jobs import lifecycle
from agent.retention import apply_retention
from agent.scp import StorageSCP
from agent.settings import Settings
from agent.storage_commitment import CommitmentWaiters
from agent.t2_first import T2First
from agent.worker import Worker
from storage import jobs, queries
from storage.models import utcnow

logger = logging.getLogger(__name__)


class AgentService:
    """``liver-agent serve``: everything that runs in the agent process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ctx = open_context(settings)
        self.stop_event = threading.Event()
        self.commitments = CommitmentWaiters()
        self.scp = StorageSCP(
            settings.dicom,
            self.ctx.ingestor,
            self.ctx.metrics,
            commitments=self.commitments,
        )
        self.ctx.ingestor.on_association_end = self._schedule_completion
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.started_at = utcnow()  # restart grace: the stable rule counts from here
        self.delivery_lanes = DeliveryLanes()
        self.deliverer = Deliverer(
            settings,
            self.ctx.sessions,
            self.ctx.metrics,
            lanes=self.delivery_lanes,
            commitments=self.commitments,
        )
        self.t2_first = T2First(
            self.ctx.sessions,
            self.ctx.spool,
            settings.completion,
            settings.pipeline.selection_rules,
        )
        self._threads: list[threading.Thread] = []
        self.http: Any = None

    def _schedule_completion(self) -> None:
        """An association (or STOW request) ended: check again right after the quiet period
        instead of waiting for the next poll."""
        import datetime as dt

        quiet = self.settings.completion.quiet_seconds
        self.scheduler.add_job(
            self._check_completion,
            "date",
            run_date=utcnow() + dt.timedelta(seconds=quiet + 0.02),
            misfire_grace_time=None,
        )

    def _wake_delivery(self) -> None:
        """A job has deliveries: attempt them now rather than at the next poll."""
        job = self.scheduler.get_job("delivery")
        if job is not None:
            job.modify(next_run_time=utcnow())

    def _check_completion(self) -> None:
        complete_ready_studies(
            self.ctx.sessions,
            self.settings.completion,
            self.ctx.metrics,
            on_queued=self.ctx.wake_workers.set,
            watching_since=self.started_at,
            t2_first=self.t2_first,
        )

    def _watch_series(self) -> None:
        """T2-first: every ``series_poll_seconds``, queue a job for every study still arriving
        whose axial T2 series is complete (:mod:`agent.t2_first`)."""
        while not self.stop_event.wait(self.settings.completion.series_poll_seconds):
            try:
                if self.t2_first.start_ready_series(utcnow(), watching_since=self.started_at):
                    self.ctx.wake_workers.set()
            except Exception:  # a bad study must not stop the watch; completion still runs
                logger.exception("T2-first check failed")

    def _recover(self) -> None:
        """After a crash or restart: close dangling associations, re-queue orphaned jobs,
        drop temporary spool files, put interrupted deliveries back to pending."""
        removed = self.ctx.spool.remove_temporaries()
        with self.ctx.sessions.begin() as session:
            aborted = queries.abort_open_associations(session)
            requeued = lifecycle.requeue_stale(session, older_than=utcnow())
            jobs.release_sending_deliveries(session)
            spool_bytes = queries.spool_bytes(session)
        self.ctx.metrics.spool_bytes.set(float(spool_bytes))
        if removed or aborted or requeued:
            logger.info(
                "recovered: %s temporary spool files removed, %s associations closed, "
                "jobs re-queued: %s",
                removed,
                aborted,
                requeued or "none",
            )

    def _queue_depth(self) -> float:
        with self.ctx.sessions() as session:
            return float(jobs.count_queued(session))

    def _requeue_stale(self) -> None:
        import datetime as dt

        older = utcnow() - dt.timedelta(seconds=self.settings.worker.stale_after_seconds)
        with self.ctx.sessions.begin() as session:
            ids = lifecycle.requeue_stale(session, older_than=older)
        if ids:
            logger.warning("re-queued jobs whose worker stopped: %s", ids)
            self.ctx.wake_workers.set()

    def start(self) -> None:
        self.started_at = utcnow()
        self._recover()
        self.ctx.metrics.set_queue_depth_source(self._queue_depth)
        if self.settings.worker.threads > 0:
            self.ctx.models.start()
        s = self.settings
        self.scheduler.add_job(
            self._check_completion,
            "interval",
            seconds=s.completion.poll_seconds,
            id="completion",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.add_job(
            self.deliverer.deliver_due,
            "interval",
            seconds=s.delivery.poll_seconds,
            id="delivery",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.add_job(
            self._requeue_stale,
            "interval",
            seconds=max(s.worker.heartbeat_seconds, 5.0),
            id="stale-jobs",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.add_job(
            lambda: apply_retention(
                self.ctx.sessions,
                self.ctx.spool,
                spool_days=s.spool.retention_days,
                results_days=s.results.retention_days,
            ),
            "interval",
            hours=1,
            id="retention",
            max_instances=1,
            coalesce=True,
            next_run_time=utcnow(),
        )
        self.scheduler.start()
        host = socket.gethostname()
        for n in range(s.worker.threads):
            worker = Worker(
                s,
                self.ctx.sessions,
                self.ctx.spool,
                self.ctx.models,
                self.ctx.metrics,
                self.ctx.wake_workers,
                name=f"{host}:{os.getpid()}:{n}",
                on_delivering=self._wake_delivery,
            )
            thread = threading.Thread(
                target=worker.run_forever,
                args=(self.stop_event,),
                name=f"worker-{n}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        if s.completion.t2_first:  # a loop, not a scheduler job: a slow scan is not a "miss"
            thread = threading.Thread(target=self._watch_series, name="t2-first", daemon=True)
            thread.start()
            self._threads.append(thread)
        if s.http.enabled:
            from agent.http.server import HttpServer

            self.http = HttpServer(self.ctx)
            self.http.start()
        self.scp.start()

    def stop(self) -> None:
        logger.info("stopping")
        self.scp.stop()
        self.ctx.ingestor.close()
        self.stop_event.set()
        self.ctx.wake_workers.set()
        self.scheduler.shutdown(wait=False)
        self.delivery_lanes.stop(timeout=2.0)  # an attempt in flight is left: pending at start
        if self.http is not None:
            self.http.stop()
        for thread in self._threads:
            thread.join(timeout=30)
        self.ctx.engine.dispose()
