"""The agent's settings: one pydantic-settings model read from YAML with environment overrides.

Precedence, highest first: explicit keyword arguments, environment variables
(``LIVER_AGENT__DICOM__PORT=11113``), the YAML file (``--config`` or ``LIVER_AGENT_CONFIG``),
then the defaults below, which run with nothing configured.
"""

from __future__ import annotations

import ipaddress
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from agent.masking import mask_url_password
from agent.tls import DestinationTls, DicomTls, ServerTls

CONFIG_ENV = "LIVER_AGENT_CONFIG"
ENV_PREFIX = "LIVER_AGENT__"

_AE_TITLE = re.compile(
    r"^[\x20-\x5b\x5d-\x7e]{1,16}$"
)  # PS3.5 AE VR: no backslash, no control chars


def _check_ae_title(value: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError(
            f"{value!r} is not a valid AE title: 1 to 16 printable characters, no backslash"
        )
    return value.strip()


AETitle = Annotated[str, Field(min_length=1, max_length=16)]


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AllowedCaller(_Group):
    """One entry of the calling-AE allow-list: an AE title, optionally bound to a host."""

    ae_title: AETitle
    host: str | None = Field(
        default=None, description="IP address the association must come from; any if unset"
    )

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae_title(v)))


class NativeFrontEnd(_Group):
    """A native C-STORE receiver in front of the agent (``agent.native_receiver``): DCMTK
    ``storescp`` listens on the SCP's port and writes each instance into ``<spool>/incoming``;
    the agent validates and records the files behind it. Faster than the Python SCP (it takes
    studies in at the rate of Orthanc or above), with weaker guarantees: see
    the README, "Fast ingest: the native front end"."""

    enabled: bool = Field(
        default=False,
        description="receive C-STORE with DCMTK storescp instead of the agent's own SCP",
    )
    storescp: str = Field(default="storescp", description="the storescp program to run")
    source_ae: AETitle | None = Field(
        default=None,
        description="the AE title recorded as the sender of every study storescp receives "
        "(it does not pass the calling AE title on); destinations with route: source go by "
        "it: name the PACS that sends, or give the destinations route: always",
    )
    fsync: bool = Field(
        default=False,
        description="flush each file and its folder to disk before storescp answers Success "
        "(a `sync` process per instance, run by storescp --exec-on-reception --exec-sync): "
        "what is acknowledged survives a power cut, at about a fifth of the speed",
    )
    max_pdu: int = Field(default=131072, ge=4096, le=131072, description="storescp --max-pdu")
    incoming: Path | None = Field(
        default=None,
        description="where storescp writes, on the spool's file system; default "
        "<spool>/incoming. Each receiver sharing a spool needs a folder of its own (another "
        "receiver would take in files that are still being written)",
    )
    service_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="port of the agent's own SCP beside storescp, for storage commitment "
        "reports (N-EVENT-REPORT) and C-ECHO; none: not started",
    )
    index_threads: int = Field(
        default=2, ge=1, le=32, description="batches of received files taken in at once"
    )
    retry_seconds: float = Field(
        default=5.0,
        gt=0,
        description="a file the spool or database could not take (disk full, database down) "
        "is tried again after this long",
    )

    _ae = field_validator("source_ae")(
        classmethod(lambda cls, v: None if v is None else _check_ae_title(v))
    )


class DicomSettings(_Group):
    """The DICOM SCP (C-ECHO, C-STORE) the PACS sends studies to."""

    ae_title: AETitle = "LIVERAI"
    host: str = Field(default="0.0.0.0", description="address to listen on")  # noqa: S104
    port: int = Field(default=11112, ge=1, le=65535)
    max_associations: int = Field(default=10, ge=1, le=1000)
    require_called_ae: bool = Field(
        default=True, description="reject associations whose called AE title is not ours"
    )
    allow_list_enabled: bool = Field(
        default=False, description="only accept calling AEs listed in allowed_callers"
    )
    allowed_callers: list[AllowedCaller] = Field(default_factory=list)
    acse_timeout: float = Field(default=30.0, gt=0)
    dimse_timeout: float = Field(default=60.0, gt=0)
    network_timeout: float = Field(default=120.0, gt=0)
    tls: DicomTls = Field(
        default_factory=DicomTls, description="DICOM TLS on the SCP's port (PS3.15 Annex B)"
    )
    native: NativeFrontEnd = Field(
        default_factory=NativeFrontEnd,
        description="receive C-STORE with DCMTK storescp in front of the agent (faster)",
    )

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae_title(v)))

    @model_validator(mode="after")
    def _native_limits(self) -> DicomSettings:
        """storescp cannot apply these checks: say so at load instead of dropping them."""
        if not self.native.enabled:
            return self
        unsupported = []
        if self.allow_list_enabled:
            unsupported.append("allow_list_enabled (storescp cannot check calling AE titles)")
        if self.require_called_ae:
            unsupported.append(
                "require_called_ae (storescp accepts any called AE title; set it to false)"
            )
        if self.tls.enabled and self.tls.private_key_password is not None:
            unsupported.append(
                "tls.private_key_password (storescp would show it on its command line: "
                "give it an unencrypted key file readable by the agent's user only)"
            )
        if self.native.service_port == self.port:
            unsupported.append("native.service_port equal to port (storescp listens there)")
        if unsupported:
            raise ValueError(
                "dicom.native.enabled cannot be combined with: " + "; ".join(unsupported)
            )
        return self


class Synchronous(StrEnum):
    """SQLite ``PRAGMA synchronous`` in WAL mode (FULL: flush at every commit)."""

    FULL = "FULL"
    NORMAL = "NORMAL"


class DatabaseSettings(_Group):
    """Where studies, jobs and deliveries are recorded."""

    url: str = Field(
        default="sqlite:///var/liver-agent.db",
        description="SQLAlchemy URL; a relative SQLite path is relative to the working directory",
    )
    sqlite_synchronous: Synchronous = Field(
        default=Synchronous.NORMAL,
        description="NORMAL: received instances are still durable before they are "
        "acknowledged (the ingest flushes the file system holding the spool and the "
        "database); other state changes may roll back by a few seconds on power loss. "
        "FULL flushes at every commit.",
    )
    pool_size: int = Field(
        default=5,
        ge=1,
        le=200,
        description="PostgreSQL: connections each agent keeps open (unused for SQLite)",
    )
    pool_max_overflow: int = Field(
        default=10, ge=0, le=200, description="PostgreSQL: extra connections allowed at peaks"
    )
    pool_timeout_seconds: float = Field(
        default=30.0, gt=0, description="PostgreSQL: wait this long for a free connection"
    )
    pool_recycle_seconds: float = Field(
        default=1800.0, gt=0, description="PostgreSQL: replace a connection after this long"
    )


class SpoolSettings(_Group):
    """Where received instances are kept as DICOM Part 10 files."""

    path: Path = Path("var/spool")
    flush: str = Field(
        default="files",
        pattern=r"^(files|filesystem)$",
        description="how received files are made durable before they are acknowledged: "
        "files = fsync each file, its folder and the database log (robust on a shared disk); "
        "filesystem = one syncfs of the spool's file system (fastest on a dedicated volume)",
    )
    min_free_mb: int = Field(
        default=512, ge=0, description="refuse C-STORE with 0xA700 below this much free disk"
    )
    retention_days: float = Field(
        default=1.0,
        ge=0,
        description="received images are deleted this long after every job of their study "
        "is final (done, not_evaluated, failed, cancelled); never while a job needs them",
    )


class CompletionSettings(_Group):
    """When a study counts as complete (DESIGN.md: data flow, step 2)."""

    quiet_seconds: float = Field(default=5.0, ge=0, description="after association release")
    stable_seconds: float = Field(default=60.0, gt=0, description="fallback, whatever happens")
    poll_seconds: float = Field(default=1.0, gt=0)
    t2_first: bool = Field(
        default=True,
        description="start the job as soon as the axial T2 series that selection would choose "
        "is complete, while other series of the study are still arriving; a later better T2 "
        "or more images of it make a new job version, other series change nothing",
    )
    series_quiet_seconds: float = Field(
        default=1.0,
        ge=0,
        description="T2-first: a series counts as complete when nothing of it arrived for this "
        "long and its slices form a regular stack (all of ImagesInAcquisition, where given)",
    )
    series_poll_seconds: float = Field(
        default=0.25,
        gt=0,
        description="T2-first: how often the series of studies still arriving are looked at",
    )

    @model_validator(mode="after")
    def _stable_after_quiet(self) -> CompletionSettings:
        if self.stable_seconds < self.quiet_seconds:
            raise ValueError("stable_seconds must not be shorter than quiet_seconds")
        return self


class Device(StrEnum):
    """Where the networks run."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Runtime(StrEnum):
    """What runs the networks' forward passes."""

    AUTO = "auto"
    TORCH = "torch"
    OPENVINO = "openvino"


class DeploymentMode(StrEnum):
    """Whether a model's results go to the PACS: ``live`` sends them to the destinations,
    ``silent`` keeps them (outputs written, shown on the job page) and sends nothing."""

    LIVE = "live"
    SILENT = "silent"


class ModelSettings(_Group):
    """The two networks. A task without a bundle uses its DEMO bundle (built on first use), which
    evaluates only the project's phantom studies: set ``segmentation`` to a real bundle (e.g. from
    ``liver-agent model build-chaos``) for SEGs of real studies, and ``classification`` to a
    site-trained classifier for findings."""

    segmentation: Path | None = Field(default=None, description="segmentation bundle folder")
    classification: Path | None = Field(default=None, description="classification bundle folder")
    device: Device = Device.AUTO
    runtime: Runtime = Field(
        default=Runtime.AUTO,
        description="torch, openvino (CPU only: converted at load, bfloat16 where the CPU has "
        "it; docs/benchmarks.md 'CPU inference' for speed and parity), or auto (openvino on a "
        "CPU where it is installed, else torch)",
    )
    cache_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "liver-agent"
        ),
        description="where the demo bundle is built and kept",
    )
    mode: DeploymentMode = Field(
        default=DeploymentMode.LIVE,
        description="deployment mode of every model without its own entry in 'modes'",
    )
    modes: dict[str, DeploymentMode] = Field(
        default_factory=dict,
        description="deployment mode per bundle name (manifest 'name'); a switch made with "
        "'liver-agent model mode' or the API is stored in the database and wins over both",
    )
    store: Path = Field(
        default=Path("var/models"),
        description="model store: 'liver-agent model install' copies bundles here and "
        "'model use NAME VERSION' picks the serving one per task, which wins over "
        "'segmentation' / 'classification' above",
    )


class PipelineSettings(_Group):
    """Pipeline options that are not part of a model bundle."""

    selection_rules: Path | None = Field(
        default=None, description="YAML file overriding the shipped series-selection rules"
    )
    caudate_fraction: float = Field(
        default=0.45,
        gt=0,
        lt=1,
        description="caudate level as a fraction of the liver's cranio-caudal extent from its top",
    )


class WorkerSettings(_Group):
    """Threads that run queued jobs."""

    threads: int = Field(
        default=1, ge=0, le=64, description="0: receive only (another node runs the jobs)"
    )
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    stale_after_seconds: float = Field(
        default=120.0, gt=0, description="re-queue a running job whose heartbeat is older"
    )


class ResultsSettings(_Group):
    """Result objects written for delivery."""

    path: Path = Path("var/results")
    retention_days: float = Field(default=7.0, ge=0, description="kept this long after delivery")


class DestinationObjects(_Group):
    """Which result objects a destination receives."""

    seg: bool = True
    sr: bool = True
    sc: bool = False
    kos: bool = Field(
        default=False,
        description="Key Object Selection flagging the caudate-level slice (images-only viewers)",
    )
    not_evaluated_sr: bool = True
    sc_heatmap: bool = Field(
        default=False,
        description="burn the classifier's heat map (where it looked) into the Secondary "
        "Capture (needs sc; heat map enabled)",
    )


class Destination(_Group):
    """Where results go: a DICOM node (C-STORE) or a DICOMweb endpoint (STOW-RS)."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    ae_title: AETitle | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    stow_url: str | None = None
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    route: str = Field(
        default="source",
        pattern=r"^(source|always)$",
        description="source: only studies sent by this AE title; always: every job",
    )
    send: DestinationObjects = Field(default_factory=DestinationObjects)
    seg_omit_empty_frames: bool = Field(
        default=False, description="some viewers misplace SEGs whose empty frames are omitted"
    )
    tls: DestinationTls = Field(
        default_factory=DestinationTls, description="DICOM TLS to this node (DIMSE only)"
    )
    storage_commitment: bool = Field(
        default=False,
        description="after the C-STOREs, ask this node for storage commitment (N-ACTION) and "
        "count the delivery done only when its report confirms every object (DIMSE only; the "
        "node must know the agent's AE title, host and port to send the report back)",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Destination:
        dimse = self.ae_title is not None or self.host is not None or self.port is not None
        if dimse and self.stow_url:
            raise ValueError(f"destination {self.name}: give ae_title/host/port or stow_url")
        if not dimse and not self.stow_url:
            raise ValueError(f"destination {self.name}: needs ae_title, host, port or stow_url")
        if dimse and (self.ae_title is None or self.host is None or self.port is None):
            raise ValueError(f"destination {self.name}: ae_title, host and port are all needed")
        if self.token and (self.username or self.password):
            raise ValueError(f"destination {self.name}: use token or username/password")
        if self.tls.enabled and not dimse:
            raise ValueError(f"destination {self.name}: tls is for DICOM nodes; use https://")
        if self.storage_commitment and not dimse:
            raise ValueError(f"destination {self.name}: storage_commitment is for DICOM nodes")
        return self

    @property
    def is_dimse(self) -> bool:
        return self.stow_url is None


class DeliverySettings(_Group):
    """Retry schedule for deliveries."""

    retry_seconds: list[float] = Field(
        default_factory=lambda: [10.0, 30.0, 120.0, 600.0, 1800.0, 3600.0],
        description="wait before each retry; after the last one the delivery is dead",
    )
    poll_seconds: float = Field(default=1.0, gt=0)
    timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="longest wait of one delivery attempt for the destination (TCP connect, "
        "association, each response or read); a destination that stays silent fails the "
        "attempt after this, and other destinations never wait for it",
    )
    commitment_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="longest wait for a destination's storage commitment report after the "
        "request; without one the attempt fails (commitment_timeout) and is retried",
    )


class HttpSettings(_Group):
    """The admin API, web page, STOW-RS ingress and metrics."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    token: SecretStr | None = Field(
        default=None,
        description="bearer token; required off loopback, else generated into var/http-token",
    )
    tls: ServerTls = Field(default_factory=ServerTls, description="HTTPS for the API and pages")

    @model_validator(mode="after")
    def _token_off_loopback(self) -> HttpSettings:
        problem = exposure_problem(self)
        if problem is None and self.token is not None:
            problem = token_problem(self.token.get_secret_value())
        if problem is not None:
            raise ValueError(problem)
        return self


MIN_TOKEN_LENGTH = 8


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be the API token, or None. The one rule for a token, whether it
    comes from the settings (checked when they load, so ``config check`` says what ``serve``
    says) or from the token file; spaces around it do not count (they are stripped)."""
    if len(token.strip()) < MIN_TOKEN_LENGTH:
        return (
            f"http.token must be at least {MIN_TOKEN_LENGTH} characters long "
            "(spaces around it do not count)"
        )
    return None


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problem(http: HttpSettings) -> str | None:
    """Why serving ``http`` would expose the API without a token (off loopback, no
    ``http.token``), or None when it would not."""
    if http.enabled and http.token is None and not is_loopback(http.host):
        return (
            f"http.host is {http.host}, which is reachable from other machines, but no "
            "http.token is set: set LIVER_AGENT__HTTP__TOKEN (or http.token in the settings "
            "file), or listen on 127.0.0.1"
        )
    return None


class AgentRole(StrEnum):
    """What one agent does when several share one PostgreSQL database and one spool."""

    ALL = "all"
    """Everything: today's single process."""
    RECEIVER = "receiver"
    """Accept C-STORE and STOW-RS, record instances, complete studies; run no jobs."""
    WORKER = "worker"
    """Run the pipeline on queued jobs and send the deliveries; no DICOM listener."""


class ClusterSettings(_Group):
    """Several agents on one database: see "Scaling out" in the README."""

    role: AgentRole = Field(
        default=AgentRole.ALL,
        description="all | receiver | worker (``serve --role`` overrides it); every role "
        "serves the HTTP API and page when http.enabled",
    )


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class MonitoringSettings(_Group):
    """Monitoring of each model's outputs, agreement with feedback and input drift, and the
    thresholds that raise alerts (``GET /api/alerts``; ``/readyz`` stays up). A threshold set
    to null is not checked."""

    window_days: int = Field(default=90, ge=1, le=3650, description="jobs of the last N days")
    min_feedback_cases: int = Field(
        default=20, ge=1, description="feedback cases a model needs before agreement alerts"
    )
    min_jobs: int = Field(
        default=20, ge=1, description="evaluated jobs a model needs before share alerts"
    )
    min_accuracy: float | None = Field(default=0.8, ge=0, le=1)
    min_sensitivity: float | None = Field(default=None, ge=0, le=1)
    min_specificity: float | None = Field(default=None, ge=0, le=1)
    max_positive_share: float | None = Field(default=0.8, ge=0, le=1)
    max_drift_share: float | None = Field(default=0.2, ge=0, le=1)


class LoggingSettings(_Group):
    level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    format: LogFormat = LogFormat.TEXT


class DriftSettings(_Group):
    """Input drift: the selected series' header values against each bundle's training
    distribution (:mod:`pipeline.drift`). Tolerances are fractions of the training range's
    bounds (0.25: trained TE 80-100 ms accepts 60-125 ms)."""

    enabled: bool = True
    manufacturer: bool = Field(default=True, description="an unknown manufacturer is drift")
    field_strength_tolerance: float = Field(default=0.1, ge=0, le=10)
    echo_time_tolerance: float = Field(default=0.25, ge=0, le=10)
    repetition_time_tolerance: float = Field(default=0.5, ge=0, le=10)
    pixel_spacing_tolerance: float = Field(default=0.25, ge=0, le=10)
    matrix_tolerance: float = Field(default=0.5, ge=0, le=10)


class HeatmapSettings(_Group):
    """Where the classifier looked: a Grad-CAM heat map of the ResNet50 on the caudate-level
    slice (:mod:`pipeline.heatmap`), kept as a PNG with the job's results."""

    enabled: bool = True


class RetrieveMethod(StrEnum):
    """How studies are fetched from a source: C-MOVE to the agent's own AE, C-GET on the
    query association, or WADO-RS (PS3.18)."""

    MOVE = "move"
    GET = "get"
    WADO = "wado"


class Source(_Group):
    """A PACS or archive the agent queries and retrieves studies from (cohorts, requests).

    DIMSE (``kind: dimse``): C-FIND at study and series level, then C-MOVE to the agent's own
    AE title (the source must know it as a move destination) or C-GET. DICOMweb
    (``kind: dicomweb``): QIDO-RS, then WADO-RS.
    """

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: str = Field(default="dimse", pattern=r"^(dimse|dicomweb)$")
    ae_title: AETitle | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    base_url: str | None = Field(default=None, description="DICOMweb root, e.g. .../dicom-web")
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    retrieve: RetrieveMethod = RetrieveMethod.MOVE
    move_destination: AETitle | None = Field(
        default=None,
        description="AE title the source sends C-MOVE results to (default: dicom.ae_title)",
    )
    max_concurrent_studies: int = Field(default=2, ge=1, le=32)
    timeout_seconds: float = Field(default=60.0, gt=0, description="network and DIMSE timeout")

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        if self.kind == "dimse":
            if self.ae_title is None or self.host is None or self.port is None:
                raise ValueError(f"source {self.name}: ae_title, host and port are all needed")
            if self.retrieve is RetrieveMethod.WADO:
                raise ValueError(f"source {self.name}: retrieve wado needs kind dicomweb")
        else:
            if not self.base_url:
                raise ValueError(f"source {self.name}: kind dicomweb needs base_url")
            if self.retrieve is not RetrieveMethod.WADO:
                raise ValueError(f"source {self.name}: kind dicomweb retrieves with wado")
        if self.token and (self.username or self.password):
            raise ValueError(f"source {self.name}: use token or username/password")
        return self


class CohortSettings(_Group):
    """Site cohorts: where their processed slices are kept, and the patient key's salt."""

    path: Path = Field(default=Path("var/cohorts"), description="one folder per cohort")
    patient_key_salt: SecretStr | None = Field(
        default=None,
        description="salt of the patient key in exports (SHA-256 of salt + Patient ID); "
        "default: generated once into <path>/patient-key-salt",
    )


class Settings(BaseSettings):
    """Everything the agent reads at start. See ``deploy/liver-agent.example.yaml``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )
    _yaml_file: ClassVar[Path | None] = None

    dicom: DicomSettings = Field(default_factory=DicomSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    completion: CompletionSettings = Field(default_factory=CompletionSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    results: ResultsSettings = Field(default_factory=ResultsSettings)
    destinations: list[Destination] = Field(default_factory=list)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    heatmap: HeatmapSettings = Field(default_factory=HeatmapSettings)

    sources: list[Source] = Field(
        default_factory=list, description="archives to query/retrieve from (cohorts, requests)"
    )
    cohorts: CohortSettings = Field(default_factory=CohortSettings)

    cluster: ClusterSettings = Field(default_factory=ClusterSettings)

    @model_validator(mode="after")
    def _native_routing(self) -> Settings:
        """Without a calling AE title, route: source would send results nowhere: say so."""
        native = self.dicom.native
        by_source = [d.name for d in self.destinations if d.route == "source"]
        if native.enabled and native.source_ae is None and by_source:
            raise ValueError(
                "dicom.native.source_ae must name the PACS that sends: storescp does not pass "
                "the calling AE title on, and these destinations send results back to the "
                f"sender (route: source): {', '.join(by_source)}; or give them route: always"
            )
        return self

    @model_validator(mode="after")
    def _native_incoming_of_its_own(self) -> Settings:
        """Receivers that share a spool must not share the native front end's folder."""
        native = self.dicom.native
        shared = self.cluster.role != AgentRole.ALL or not self.database.url.startswith("sqlite")
        if native.enabled and shared and native.incoming is None:
            raise ValueError(
                "dicom.native.incoming must be set when agents share the spool (cluster.role "
                "receiver, or a PostgreSQL database): a folder of this receiver's own, on the "
                "spool's file system"
            )
        return self

    @model_validator(mode="after")
    def _unique_destinations(self) -> Settings:
        names = [d.name for d in self.destinations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"destination names must be unique: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _unique_sources(self) -> Settings:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique: {', '.join(dupes)}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=cls._yaml_file))
        return tuple(sources)

    def destination(self, name: str) -> Destination | None:
        return next((d for d in self.destinations if d.name == name), None)

    def source(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)


class ConfigFileError(ValueError):
    """The settings file is missing or is not a YAML mapping."""


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings.

    Parameters
    ----------
    config
        YAML file; if None, ``$LIVER_AGENT_CONFIG`` if set, else defaults and environment only.
    overrides
        Field values that win over every other source (used by tests).

    Raises
    ------
    ConfigFileError
        The file does not exist or is not a mapping.
    pydantic.ValidationError
        A value is invalid; the error names the field (``dicom.port``).
    """
    if config is None and os.environ.get(CONFIG_ENV):
        config = Path(os.environ[CONFIG_ENV])
    if config is not None:
        _check_yaml_file(config)

    class _FromFile(Settings):
        _yaml_file: ClassVar[Path | None] = config

    _FromFile.__name__ = _FromFile.__qualname__ = "Settings"
    return _FromFile(**overrides)


def _check_yaml_file(path: Path) -> None:
    import yaml

    if not path.is_file():
        raise ConfigFileError(f"settings file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigFileError(f"settings file {path} is not valid YAML: {err}") from err
    if data is not None and not isinstance(data, dict):
        raise ConfigFileError(f"settings file {path} must hold a mapping of setting groups")


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data with secrets shown as ``**********``: the
    ``SecretStr`` fields, and passwords inside ``database.url`` and each ``stow_url``."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    data["database"]["url"] = mask_url_password(data["database"]["url"])
    for destination in data["destinations"]:
        if destination.get("stow_url"):
            destination["stow_url"] = mask_url_password(destination["stow_url"])
    for source in data.get("sources", []):
        if source.get("base_url"):
            source["base_url"] = mask_url_password(source["base_url"])
    return data
