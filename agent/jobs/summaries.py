"""What the CLI and the HTTP API show of studies and jobs: one set of pydantic models, so
``liver-agent jobs show --json`` and ``GET /api/jobs/{id}`` say the same thing."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from storage import jobs, queries
from storage.models import Delivery, Job, Study


class StudyView(BaseModel):
    id: int
    study_instance_uid: str
    accession_number: str | None
    study_date: str | None
    study_description: str | None
    source_ae: str | None
    status: str
    instance_count: int
    series_count: int
    first_received_at: dt.datetime
    last_received_at: dt.datetime
    completed_at: dt.datetime | None
    latest_job_id: int | None


class SeriesView(BaseModel):
    series_instance_uid: str
    series_number: int | None
    modality: str | None
    series_description: str | None
    instance_count: int


class JobSummary(BaseModel):
    id: int
    version: int
    previous_job_id: int | None
    status: str
    reason_code: str | None
    reason: str | None
    study_instance_uid: str
    accession_number: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    probability: float | None
    label: str | None
    model_name: str | None
    model_version: str | None
    model_demo: bool | None


class StageView(BaseModel):
    stage: str
    seconds: float


class EventView(BaseModel):
    at: dt.datetime
    kind: str
    message: str
    data: dict[str, Any] | None


class OutputView(BaseModel):
    id: int
    kind: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    available: bool
    size_bytes: int


class DeliveryView(BaseModel):
    id: int
    destination: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: dt.datetime | None
    done_at: dt.datetime | None
    objects: int
    objects_sent: int


class JobDetail(JobSummary):
    instance_count: int
    study: StudyView
    series: list[SeriesView]
    evaluated: bool | None
    series_instance_uid: str | None
    slice_index: int | None
    slice_sop_instance_uid: str | None
    liver_area_mm2: float | None
    liver_volume_ml: float | None
    started_at: dt.datetime | None
    worker: str | None
    attempts: int
    details: dict[str, Any] | None
    stages: list[StageView]
    events: list[EventView]
    outputs: list[OutputView]
    deliveries: list[DeliveryView]
    next_job_id: int | None


def study_view(session: Session, study: Study) -> StudyView:
    series_count = queries.series_count(session, study.id)
    latest = queries.latest_job_id(session, study.id)
    return StudyView(
        id=study.id,
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        study_date=study.study_date,
        study_description=study.study_description,
        source_ae=study.source_ae,
        status=str(study.status),
        instance_count=study.instance_count,
        series_count=int(series_count or 0),
        first_received_at=study.first_received_at,
        last_received_at=study.last_received_at,
        completed_at=study.completed_at,
        latest_job_id=latest,
    )


def job_summary(job: Job) -> JobSummary:
    return JobSummary(
        id=job.id,
        version=job.version,
        previous_job_id=job.previous_job_id,
        status=str(job.status),
        reason_code=job.reason_code,
        reason=job.reason,
        study_instance_uid=job.study.study_instance_uid,
        accession_number=job.study.accession_number,
        created_at=job.created_at,
        finished_at=job.finished_at,
        probability=job.probability,
        label=job.label,
        model_name=job.model_name,
        model_version=job.model_version,
        model_demo=job.model_demo,
    )


def _delivery_view(delivery: Delivery) -> DeliveryView:
    return DeliveryView(
        id=delivery.id,
        destination=delivery.destination,
        status=str(delivery.status),
        attempts=delivery.attempts,
        last_error=delivery.last_error,
        next_attempt_at=delivery.next_attempt_at,
        done_at=delivery.done_at,
        objects=len(delivery.items),
        objects_sent=sum(1 for i in delivery.items if i.sent_at is not None),
    )


def job_detail(session: Session, job: Job) -> JobDetail:
    summary = job_summary(job)
    next_job = jobs.next_version_id(session, job.id)
    return JobDetail(
        **summary.model_dump(),
        instance_count=job.instance_count,
        study=study_view(session, job.study),
        series=[
            SeriesView(
                series_instance_uid=s.series_instance_uid,
                series_number=s.series_number,
                modality=s.modality,
                series_description=s.series_description,
                instance_count=s.instance_count,
            )
            for s in job.study.series
        ],
        evaluated=job.evaluated,
        series_instance_uid=job.series_instance_uid,
        slice_index=job.slice_index,
        slice_sop_instance_uid=job.slice_sop_instance_uid,
        liver_area_mm2=job.liver_area_mm2,
        liver_volume_ml=job.liver_volume_ml,
        started_at=job.started_at,
        worker=job.worker,
        attempts=job.attempts,
        details=job.details,
        stages=[StageView(stage=s.stage, seconds=s.seconds) for s in job.stages],
        events=[
            EventView(at=e.at, kind=e.kind, message=e.message, data=e.data) for e in job.events
        ],
        outputs=[
            OutputView(
                id=o.id,
                kind=o.kind,
                sop_class_uid=o.sop_class_uid,
                sop_instance_uid=o.sop_instance_uid,
                series_instance_uid=o.series_instance_uid,
                available=o.path is not None,
                size_bytes=o.size_bytes,
            )
            for o in job.outputs
        ],
        deliveries=[_delivery_view(d) for d in job.deliveries],
        next_job_id=next_job,
    )
