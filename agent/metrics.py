"""Prometheus metrics of one agent process, in a registry of its own (made in main)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class _SourceCollector(Collector):
    """Metric families computed at scrape time by a source set later (None: none)."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[Metric]] | None = None

    def collect(self) -> Iterable[Metric]:
        return [] if self.source is None else self.source()


class Metrics:
    """The agent's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.instances_received = Counter(
            "liver_agent_instances_received",
            "Instances received and stored durably",
            ["protocol"],
            registry=r,
        )
        self.instances_duplicate = Counter(
            "liver_agent_instances_duplicate",
            "Instances received again (same SOP Instance UID), acknowledged without a write",
            ["protocol"],
            registry=r,
        )
        self.instances_rejected = Counter(
            "liver_agent_instances_rejected",
            "Instances refused with a failure status",
            ["protocol", "reason"],
            registry=r,
        )
        self.associations_rejected = Counter(
            "liver_agent_associations_rejected",
            "Associations rejected (allow-list, called AE) or closed unfinished (too slow)",
            ["reason"],
            registry=r,
        )
        self.studies_completed = Counter(
            "liver_agent_studies_completed", "Studies that met the completion rule", registry=r
        )
        self.jobs_finished = Counter(
            "liver_agent_jobs_finished", "Jobs that reached a final state", ["status"], registry=r
        )
        self.stage_seconds = Histogram(
            "liver_agent_stage_seconds",
            "Duration of pipeline and job stages",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.delivery_attempts = Counter(
            "liver_agent_delivery_attempts",
            "Delivery attempts by destination and outcome",
            ["destination", "outcome"],
            registry=r,
        )
        self.delivery_failures = Counter(
            "liver_agent_delivery_failures",
            "Failed delivery attempts by destination",
            ["destination"],
            registry=r,
        )
        self.spool_bytes = Gauge(
            "liver_agent_spool_bytes", "Bytes of instances in the spool", registry=r
        )
        self.spool_files = Gauge(
            "liver_agent_spool_files", "Received instances kept in the spool", registry=r
        )
        self.queue_depth = Gauge("liver_agent_queue_depth", "Jobs waiting (queued)", registry=r)
        self.native_waiting = Gauge(
            "liver_agent_native_waiting_files",
            "Native front end: files storescp acknowledged that are not yet taken in",
            registry=r,
        )
        self.native_paused = Gauge(
            "liver_agent_native_paused",
            "Native front end: 1 while storescp is stopped because the spool is low on disk",
            registry=r,
        )
        self._model_monitoring = _SourceCollector()
        r.register(self._model_monitoring)
        self.drift_checks = Counter(
            "liver_agent_input_drift_checks",
            "Jobs whose selected series was compared with the bundles' training distribution, "
            "by outcome (flagged, in_distribution, no_distribution)",
            ["outcome"],
            registry=r,
        )
        self.drift_values = Counter(
            "liver_agent_input_drift_values",
            "Header values found outside a bundle's training distribution, by value "
            "(manufacturer, field_strength_t, echo_time_ms, ...)",
            ["check"],
            registry=r,
        )

    def set_queue_depth_source(self, source: Callable[[], float]) -> None:
        """Read the queue depth at scrape time."""
        self.queue_depth.set_function(source)

    def set_spool_usage_source(self, source: Callable[[], tuple[int, int]]) -> None:
        """Read the spool's (files, bytes) at scrape time."""
        self.spool_files.set_function(lambda: float(source()[0]))
        self.spool_bytes.set_function(lambda: float(source()[1]))

    def set_model_monitoring_source(self, source: Callable[[], Iterable[Metric]]) -> None:
        """Per-model monitoring gauges (``agent.monitoring``), computed at scrape time."""
        self._model_monitoring.source = source

    def render(self) -> bytes:
        return generate_latest(self.registry)
