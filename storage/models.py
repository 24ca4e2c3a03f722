"""Database models: studies, series and instances received; jobs, their stages, events,
outputs and deliveries; the audit trail of model deployment modes. SQLAlchemy 2.0 typed
declarative mapping."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

UID = String(64)
#: the largest id an INTEGER primary key holds on every backend (PostgreSQL: 32 bits)
MAX_ROW_ID = 2**31 - 1


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class StrEnumType(TypeDecorator[Any]):
    """A string enum stored as its value in a VARCHAR, loaded back as the enum member."""

    impl = String(16)
    cache_ok = True

    def __init__(self, enum: type[StrEnum]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else self.enum(value)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSON,
    }


class StudyStatus(StrEnum):
    """``receiving`` until the completion rule fires, then ``complete`` (a job exists)."""

    RECEIVING = "receiving"
    COMPLETE = "complete"


class JobStatus(StrEnum):
    """DESIGN.md job states. Final: done, not_evaluated, failed, cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DELIVERING = "delivering"
    DONE = "done"
    NOT_EVALUATED = "not_evaluated"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_JOB


_FINAL_JOB = {JobStatus.DONE, JobStatus.NOT_EVALUATED, JobStatus.FAILED, JobStatus.CANCELLED}


class IngestProtocol(StrEnum):
    """How an instance or association came in (``Association.protocol``, metric label)."""

    DIMSE = "dimse"
    STOW = "stow"
    WADO = "wado"  # retrieved by the agent from a DICOMweb source (cohorts, requests)


class EventKind(StrEnum):
    """Kinds of entries on a job's timeline (``JobEvent.kind``)."""

    QUEUED = "queued"
    STATUS = "status"
    SUPERSEDED = "superseded"
    DISCARDED = "discarded"
    RESULT = "result"
    DELIVERIES = "deliveries"
    DELIVERED = "delivered"
    DELIVERY_FAILED = "delivery_failed"
    RETRY = "retry"
    SPOOL_DELETED = "spool_deleted"
    SILENT_MODE = "silent_mode"


class OutputKind(StrEnum):
    """Kinds of result objects a job writes (``Output.kind``)."""

    SEG = "seg"
    SR = "sr"
    SC = "sc"
    KOS = "kos"
    NOT_EVALUATED_SR = "not_evaluated_sr"


class DeliveryStatus(StrEnum):
    """``done``: every object stored; ``committed``: stored and confirmed by the destination's
    storage commitment report (destinations with ``storage_commitment``)."""

    PENDING = "pending"
    SENDING = "sending"
    DONE = "done"
    COMMITTED = "committed"
    DEAD = "dead"
    CANCELLED = "cancelled"


class AssociationStatus(StrEnum):
    OPEN = "open"
    RELEASED = "released"
    ABORTED = "aborted"


class Association(Base):
    """One DICOM association (or one STOW-RS request) that brought instances in."""

    __tablename__ = "associations"

    id: Mapped[int] = mapped_column(primary_key=True)
    calling_ae: Mapped[str] = mapped_column(String(16))
    called_ae: Mapped[str] = mapped_column(String(16))
    peer_host: Mapped[str] = mapped_column(String(64))
    protocol: Mapped[str] = mapped_column(String(8), default="dimse")
    status: Mapped[AssociationStatus] = mapped_column(
        StrEnumType(AssociationStatus), default=AssociationStatus.OPEN
    )
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None]
    instances_received: Mapped[int] = mapped_column(default=0)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)
    study_date: Mapped[str | None] = mapped_column(String(8))
    study_description: Mapped[str | None] = mapped_column(String(64))
    source_ae: Mapped[str | None] = mapped_column(
        String(16), doc="calling AE title that sent the study (last association)"
    )
    status: Mapped[StudyStatus] = mapped_column(
        StrEnumType(StudyStatus), default=StudyStatus.RECEIVING
    )
    first_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    completed_at: Mapped[dt.datetime | None]
    instance_count: Mapped[int] = mapped_column(default=0)

    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.id")
    jobs: Mapped[list[Job]] = relationship(back_populates="study", order_by="Job.version")


class StudyAssociation(Base):
    """Which associations brought instances of which study (completion waits for release)."""

    __tablename__ = "study_associations"
    __table_args__ = (UniqueConstraint("study_id", "association_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    association_id: Mapped[int] = mapped_column(ForeignKey("associations.id"), index=True)


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[int | None]
    series_description: Mapped[str | None] = mapped_column(String(64))
    instance_count: Mapped[int] = mapped_column(default=0)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    path: Mapped[str] = mapped_column(String(255), doc="relative to the spool root")
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    association_id: Mapped[int | None] = mapped_column(ForeignKey("associations.id"))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class Job(Base):
    """One run of the pipeline over one version of a study."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("study_id", "version"),
        Index("ix_jobs_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    version: Mapped[int] = mapped_column(default=1)
    previous_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    status: Mapped[JobStatus] = mapped_column(StrEnumType(JobStatus), default=JobStatus.QUEUED)
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    instance_count: Mapped[int] = mapped_column(default=0, doc="instances of the study at creation")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    worker: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)

    # result of the pipeline
    evaluated: Mapped[bool | None] = mapped_column(Boolean, doc="None until the pipeline ran")
    series_instance_uid: Mapped[str | None] = mapped_column(UID)
    slice_index: Mapped[int | None]
    slice_sop_instance_uid: Mapped[str | None] = mapped_column(UID)
    probability: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(32))
    liver_area_mm2: Mapped[float | None] = mapped_column(Float)
    liver_volume_ml: Mapped[float | None] = mapped_column(Float)
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(64))
    model_demo: Mapped[bool | None] = mapped_column(Boolean)
    details: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, doc="selection candidates, area profile, classification inputs"
    )

    study: Mapped[Study] = relationship(back_populates="jobs")
    stages: Mapped[list[JobStage]] = relationship(order_by="JobStage.id")
    events: Mapped[list[JobEvent]] = relationship(order_by="JobEvent.id")
    outputs: Mapped[list[Output]] = relationship(order_by="Output.id")
    deliveries: Mapped[list[Delivery]] = relationship(order_by="Delivery.id")


class JobStage(Base):
    """How long one pipeline stage of one job took."""

    __tablename__ = "job_stages"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    seconds: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class JobEvent(Base):
    """Append-only timeline of a job (the migration adds triggers that forbid UPDATE/DELETE)."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Output(Base):
    """A result object written by a job (SEG, SR, SC, not-evaluated SR)."""

    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    sop_class_uid: Mapped[str] = mapped_column(UID)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    path: Mapped[str | None] = mapped_column(String(512), doc="None once cleaned after retention")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """Sending a job's outputs to one destination, with retries."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("job_id", "destination"),
        Index("ix_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    status: Mapped[DeliveryStatus] = mapped_column(
        StrEnumType(DeliveryStatus), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    done_at: Mapped[dt.datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    """The agent sending it (``host:pid``) while ``sending``."""
    claimed_at: Mapped[dt.datetime | None]
    """When that agent claimed it, refreshed while it sends (a stale claim is released)."""

    items: Mapped[list[DeliveryItem]] = relationship(order_by="DeliveryItem.id")


class DeliveryItem(Base):
    """One output to send in a delivery; ``sent_at`` is set once the destination took it."""

    __tablename__ = "delivery_items"
    __table_args__ = (UniqueConstraint("delivery_id", "output_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id"), index=True)
    sent_at: Mapped[dt.datetime | None]

    output: Mapped[Output] = relationship()


class ModelModeChange(Base):
    """One switch of a model's deployment mode (``live`` / ``silent``): who, when, why.

    Append-only like ``job_events`` (the migration adds triggers that forbid UPDATE/DELETE);
    the newest row of a model is its mode in force, over the settings' default.
    """

    __tablename__ = "model_mode_changes"
    __table_args__ = (Index("ix_model_mode_changes_name_id", "model_name", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    mode: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128), doc="who: 'cli:<unix user>', 'api:token'")
    reason: Mapped[str] = mapped_column(Text)


class ApiToken(Base):
    """A named HTTP API token with a role (``viewer`` < ``reader`` < ``admin``).

    Only the SHA-256 of the token is kept (tokens are 256-bit random strings, so an unsalted
    hash is enough); the token itself is shown once, when it is made. Revoking sets
    ``revoked_at``; the row stays, so feedback and audit entries keep a name that resolves.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[dt.datetime | None]


class Feedback(Base):
    """A reader's verdict on a job's finding, or a label imported from a report.

    Append-only like ``job_events`` (the migration adds triggers that forbid UPDATE/DELETE);
    the newest row of a job is the verdict in force. ``reference_positive`` is the truth the
    verdict implies (the finding itself when the reader agrees, its opposite otherwise).
    """

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    agree: Mapped[bool] = mapped_column(Boolean)
    reference_positive: Mapped[bool] = mapped_column(Boolean)
    wrong_slice: Mapped[bool] = mapped_column(Boolean, default=False)
    wrong_outline: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str | None] = mapped_column(Text)
    user: Mapped[str] = mapped_column(String(128), doc="token name, or 'report import'")
    source: Mapped[str] = mapped_column(String(16), doc="web, api or import")
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CohortStudyStatus(StrEnum):
    """Where one study of a site cohort stands.

    ``pending`` -> ``retrieved`` -> ``processed`` | ``not_evaluated`` | ``error``; side exit
    ``failed`` (could not be retrieved: not found, move refused, ...; ``reason`` says why).
    A re-run of ``cohort pull`` retries ``pending`` and ``failed`` studies only.
    """

    PENDING = "pending"
    RETRIEVED = "retrieved"
    FAILED = "failed"
    PROCESSED = "processed"
    NOT_EVALUATED = "not_evaluated"
    ERROR = "error"


class Cohort(Base):
    """A named set of studies retrieved from a source for a local validation or training."""

    __tablename__ = "cohorts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(String(64))
    query: Mapped[dict[str, Any] | None] = mapped_column(JSON, doc="how its studies were chosen")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    studies: Mapped[list[CohortStudy]] = relationship(
        back_populates="cohort", order_by="CohortStudy.id"
    )


class CohortStudy(Base):
    """One study of a cohort: what was asked for, the study found, its status and why.

    Cohort studies are never completed into jobs (no delivery to the PACS): the completion
    rule skips a study whose Study Instance UID is in this table.
    """

    __tablename__ = "cohort_studies"
    __table_args__ = (UniqueConstraint("cohort_id", "requested"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cohort_id: Mapped[int] = mapped_column(ForeignKey("cohorts.id"), index=True)
    requested: Mapped[str] = mapped_column(
        String(80), doc="what was asked for: 'accession:X' or 'study:UID'"
    )
    study_instance_uid: Mapped[str | None] = mapped_column(UID, index=True)
    accession_number: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[CohortStudyStatus] = mapped_column(
        StrEnumType(CohortStudyStatus), default=CohortStudyStatus.PENDING
    )
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    series_fetched: Mapped[int] = mapped_column(default=0)
    instances: Mapped[int] = mapped_column(default=0)
    patient_key: Mapped[str | None] = mapped_column(String(32))
    result: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, doc="cohort run: chosen series and slice, reasons, probability, models"
    )
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    cohort: Mapped[Cohort] = relationship(back_populates="studies")
