"""The running agent: wires settings, database, spool, SCP, scheduler, workers and HTTP.

Its role (``cluster.role``) decides what it runs when several agents share one PostgreSQL
database and one spool: a receiver runs the SCP and study completion, a worker runs jobs and
deliveries, ``all`` runs everything. Periodic work shared by all agents (completion, the
delivery schedule, re-queueing stale jobs, retention) runs under an advisory lock, so one
agent at a time does each."""

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
from agent.errors import AgentError
from agent.jobs import lifecycle
from agent.native_receiver import (
    IncomingIndexer,
    StorescpFrontEnd,
    incoming_folder,
    rejected_folder,
)
from agent.retention import apply_retention, clean_rejected
from agent.scp import StorageSCP
from agent.settings import AgentRole, Settings
from agent.storage_commitment import CommitmentWaiters
from agent.t2_first import T2First
from agent.worker import Worker
from storage import jobs, queries
from storage.locks import exclusive, is_shared
from storage.models import utcnow

logger = logging.getLogger(__name__)


class AgentService:
    """``liver-agent serve``: everything that runs in the agent process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ctx = open_context(settings)
        self.stop_event = threading.Event()
        self.commitments = CommitmentWaiters()
        role = settings.cluster.role
        #: receives (C-STORE SCP, study completion) / runs jobs and deliveries
        self.receives = role in (AgentRole.ALL, AgentRole.RECEIVER)
        self.works = role in (AgentRole.ALL, AgentRole.WORKER)
        #: another agent may share the database (PostgreSQL, or a receiver and a worker on one
        #: SQLite file): recovery touches only stale work, never another agent's live work
        self.shared = is_shared(self.ctx.engine) or role != AgentRole.ALL
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        native = settings.dicom.native
        #: the C-STORE port is storescp's; the agent's own SCP (echo, commitment reports)
        #: runs on native.service_port, or not at all
        scp_settings = (
            settings.dicom.model_copy(update={"port": native.service_port})
            if native.enabled and native.service_port
            else settings.dicom
        )
        self.scp: StorageSCP | None = (
            StorageSCP(
                scp_settings,
                self.ctx.ingestor,
                self.ctx.metrics,
                commitments=self.commitments,
            )
            if not native.enabled or native.service_port
            else None
        )
        self.front_end: StorescpFrontEnd | None = None
        self.indexer: IncomingIndexer | None = None
        if native.enabled:
            incoming = incoming_folder(self.ctx.spool.root, native.incoming)
            self.front_end = StorescpFrontEnd(
                settings.dicom,
                incoming,
                min_free_bytes=settings.spool.min_free_mb * 2**20,
                on_paused=lambda paused: self.ctx.metrics.native_paused.set(float(paused)),
            )
            self.indexer = IncomingIndexer(
                self.ctx.ingestor,
                incoming,
                rejected_folder(self.ctx.spool.root),
                threads=native.index_threads,
                retry_seconds=native.retry_seconds,
                source_ae=native.source_ae,
            )
            self.indexer.on_drained = lambda: self._schedule_completion(coalesce=True)
            indexer = self.indexer
            self.ctx.metrics.native_waiting.set_function(lambda: float(indexer.backlog))
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
            name=self.name,
        )
        self.t2_first = T2First(
            self.ctx.sessions,
            self.ctx.spool,
            settings.completion,
            settings.pipeline.selection_rules,
        )
        self._threads: list[threading.Thread] = []
        self.http: Any = None

    def _schedule_completion(self, *, coalesce: bool = False) -> None:
        """An association (or STOW request) ended, or the native front end's backlog was
        taken in: check again right after the quiet period instead of waiting for the next
        poll. ``coalesce``: one such check pending at a time (a burst drains many times)."""
        import datetime as dt

        quiet = self.settings.completion.quiet_seconds
        only_one: dict[str, Any] = (
            {"id": "completion-after-intake", "replace_existing": True} if coalesce else {}
        )
        self.scheduler.add_job(
            self._check_completion,
            "date",
            run_date=utcnow() + dt.timedelta(seconds=quiet + 0.02),
            misfire_grace_time=None,
            **only_one,
        )

    def _wake_delivery(self) -> None:
        """A job has deliveries: attempt them now rather than at the next poll."""
        job = self.scheduler.get_job("delivery")
        if job is not None:
            job.modify(next_run_time=utcnow())

    def _check_completion(self) -> None:
        with exclusive(self.ctx.engine, "completion") as mine:
            if mine:
                complete_ready_studies(
                    self.ctx.sessions,
                    self.settings.completion,
                    self.ctx.metrics,
                    on_queued=self.ctx.wake_workers.set,
                    watching_since=self.started_at,
                    t2_first=self.t2_first,
                )

    def _deliver_due(self) -> None:
        with exclusive(self.ctx.engine, "delivery-schedule") as mine:
            if mine:
                self.deliverer.deliver_due()

    def _apply_retention(self) -> None:
        s = self.settings
        with exclusive(self.ctx.engine, "retention") as mine:
            if mine:
                apply_retention(
                    self.ctx.sessions,
                    self.ctx.spool,
                    spool_days=s.spool.retention_days,
                    results_days=s.results.retention_days,
                )
                if self.shared:  # temporaries of receivers that died mid-write
                    self.ctx.spool.remove_temporaries(
                        older_than_seconds=s.worker.stale_after_seconds
                    )
        if self.indexer is not None:  # files refused after storescp acknowledged them
            clean_rejected(self.indexer.rejected, s.spool.retention_days)

    def _watch_series(self) -> None:
        """T2-first: every ``series_poll_seconds``, queue a job for every study still arriving
        whose axial T2 series is complete (:mod:`agent.t2_first`)."""
        while not self.stop_event.wait(self.settings.completion.series_poll_seconds):
            try:
                with exclusive(self.ctx.engine, "t2-first") as mine:  # one agent at a time
                    started = mine and self.t2_first.start_ready_series(
                        utcnow(), watching_since=self.started_at
                    )
                if started:
                    self.ctx.wake_workers.set()
            except Exception:  # a bad study must not stop the watch; completion still runs
                logger.exception("T2-first check failed")

    def _recover(self) -> None:
        """After a crash or restart: close dangling associations, re-queue orphaned jobs,
        drop temporary spool files, put interrupted deliveries back to pending."""
        if self.shared:  # other agents are receiving, running and sending: only the stale
            self._requeue_stale()
            self.ctx.spool.remove_temporaries(
                older_than_seconds=self.settings.worker.stale_after_seconds
            )
            spool_bytes = self._spool_bytes()
            self.ctx.metrics.spool_bytes.set(float(spool_bytes))
            return
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

    def _spool_bytes(self) -> int:
        with self.ctx.sessions() as session:
            return queries.spool_bytes(session)

    def _requeue_stale(self) -> None:
        """Running jobs whose heartbeat stopped go back to the queue; on a shared database
        also deliveries whose sender stopped refreshing its claim."""
        import datetime as dt

        stale_after = self.settings.worker.stale_after_seconds
        older = utcnow() - dt.timedelta(seconds=stale_after)
        with exclusive(self.ctx.engine, "stale-work") as mine:
            if not mine:
                return
            with self.ctx.sessions.begin() as session:
                ids = lifecycle.requeue_stale(session, older_than=older)
                released = (
                    jobs.release_sending_deliveries(session, claimed_before=older)
                    if self.shared
                    else 0
                )
        if ids:
            logger.warning("re-queued jobs whose worker stopped: %s", ids)
            self.ctx.wake_workers.set()
        if released:
            logger.warning("%s deliveries whose sender stopped are pending again", released)

    def start(self) -> None:
        native = self.settings.dicom.native
        if self.front_end is not None and self.shared and native.incoming is None:
            # also when serve --role changed the role after the settings were checked
            raise AgentError(
                "native_incoming_shared",
                "dicom.native.incoming must be set when agents share the spool: a folder of "
                "this receiver's own, on the spool's file system",
            )
        self.started_at = utcnow()
        self._recover()
        self.ctx.metrics.set_queue_depth_source(self._queue_depth)
        threads = self.settings.worker.threads if self.works else 0
        if threads > 0:
            self.ctx.models.start()
        s = self.settings
        logger.info("role %s (agent %s)", s.cluster.role, self.name)
        if self.receives:
            self.scheduler.add_job(
                self._check_completion,
                "interval",
                seconds=s.completion.poll_seconds,
                id="completion",
                max_instances=1,
                coalesce=True,
            )
        if self.works:
            self.scheduler.add_job(
                self.deliverer.refresh_claims,
                "interval",
                seconds=s.worker.heartbeat_seconds,
                id="delivery-claims",
                max_instances=1,
                coalesce=True,
            )
            self.scheduler.add_job(
                self._deliver_due,
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
            self._apply_retention,
            "interval",
            hours=1,
            id="retention",
            max_instances=1,
            coalesce=True,
            next_run_time=utcnow(),
        )
        self.scheduler.start()
        for n in range(threads):
            worker = Worker(
                s,
                self.ctx.sessions,
                self.ctx.spool,
                self.ctx.models,
                self.ctx.metrics,
                self.ctx.wake_workers,
                name=f"{self.name}:{n}",
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
        if self.receives and s.completion.t2_first:  # a loop: a slow scan is not a "miss"
            thread = threading.Thread(target=self._watch_series, name="t2-first", daemon=True)
            thread.start()
            self._threads.append(thread)
        if s.http.enabled:
            from agent.http.server import HttpServer

            self.http = HttpServer(self.ctx)
            self.http.start()
        if self.receives:
            if self.front_end is not None and self.indexer is not None:
                # a storescp left by a killed agent stops first; then the files it wrote are
                # taken in, and new ones as they come
                self.front_end.stop_leftover()
                self.indexer.start()
                self.front_end.start()
            if self.scp is not None:
                self.scp.start()

    def stop(self) -> None:
        logger.info("stopping")
        if self.front_end is not None:
            self.front_end.stop()
        if self.indexer is not None:
            self.indexer.stop()  # files not yet taken in stay in incoming for the next start
        if self.scp is not None:
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
