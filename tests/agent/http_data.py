"""Test data for the HTTP edge: settings on tmp paths, small MR series with a liver-like blob,
and processed jobs written straight into the database (result fields, a real DICOM SEG output
file, stages, events, deliveries), so the API can be tested without running the pipeline."""

from __future__ import annotations

import datetime as dt
from io import BytesIO
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from agent.context import AgentContext
from agent.settings import Settings
from storage import jobs, queries
from storage.models import (
    AssociationStatus,
    Delivery,
    DeliveryItem,
    DeliveryStatus,
    EventKind,
    Job,
    JobStatus,
    Output,
    utcnow,
)
from tests.factory import mr_dataset

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def settings_for(tmp_path: Path, **groups: Any) -> Settings:
    """Settings with every path under ``tmp_path``, no workers, and the test token."""
    base: dict[str, Any] = {
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'liver-agent.db'}"},
        "spool": {"path": tmp_path / "var" / "spool", "min_free_mb": 0},
        "results": {"path": tmp_path / "var" / "results"},
        "worker": {"threads": 0},
        "model": {"cache_dir": tmp_path / "cache"},
        "http": {"token": TOKEN},
    }
    for key, value in groups.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return Settings(**base)


def liver_phantom(
    rows: int, index: int, n: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """An abdomen-like slice (uint16) with a bright ellipse as the "liver", and its mask."""
    yy, xx = np.mgrid[0:rows, 0:rows].astype(np.float32) / rows
    body = ((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.47) ** 2 <= 1.0
    size = 0.12 + 0.14 * np.sin(np.pi * (index + 1) / (n + 1))
    liver = ((yy - 0.45) / size) ** 2 + ((xx - 0.35) / (size * 1.4)) ** 2 <= 1.0
    rng = np.random.default_rng(index)
    image = 200 + 600 * body + 900 * liver + rng.normal(0, 40, (rows, rows))
    return np.clip(image, 0, 4095).astype(np.uint16), liver & body


def mr_series(
    study_uid: str,
    n: int,
    *,
    rows: int = 64,
    series_uid: str | None = None,
    accession: str = "ACC0001",
    description: str = "t2_haste_tra",
    series_number: int = 3,
) -> tuple[list[Dataset], list[np.ndarray[Any, Any]]]:
    """``n`` slices of one axial series with phantom pixels; also return the liver masks."""
    series_uid = series_uid or generate_uid()
    datasets, masks = [], []
    for i in range(n):
        ds = mr_dataset(
            study_uid=study_uid,
            series_uid=series_uid,
            index=i,
            rows=rows,
            columns=rows,
            accession=accession,
        )
        pixels, mask = liver_phantom(rows, i, n)
        ds.PixelData = pixels.tobytes()
        ds.SeriesDescription = description
        ds.SeriesNumber = series_number
        datasets.append(ds)
        masks.append(mask)
    return datasets, masks


def part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ingest(ctx: AgentContext, datasets: list[Dataset], *, protocol: str = "dimse") -> None:
    """Store instances through the ingestor, as one released association."""
    association = ctx.ingestor.begin(
        calling_ae="PACS", called_ae="LIVERAI", peer_host="127.0.0.1", protocol=protocol
    )
    for ds in datasets:
        ctx.ingestor.store(
            part10(ds), association_id=association, source_ae="PACS", protocol=protocol
        )
    ctx.ingestor.end(association, AssociationStatus.RELEASED)


def complete(ctx: AgentContext, study_uid: str, *, created_at: dt.datetime | None = None) -> int:
    """Mark a received study complete; return its new (queued) job's id."""
    with ctx.sessions.begin() as session:
        study_id = queries.study_id_of(session, study_uid)
        assert study_id is not None
        job = queries.complete_study(session, study_id, rule="test")
        assert job is not None
        if created_at is not None:
            job.created_at = created_at
        return job.id


def queued_job(
    ctx: AgentContext,
    *,
    accession: str = "ACC0001",
    created_at: dt.datetime | None = None,
    n: int = 2,
) -> tuple[int, str]:
    """A study of ``n`` small slices and its queued job; return (job id, study UID)."""
    study_uid = generate_uid()
    datasets, _ = mr_series(study_uid, n, rows=16, accession=accession)
    ingest(ctx, datasets)
    return complete(ctx, study_uid, created_at=created_at), study_uid


def build_seg(datasets: list[Dataset], masks: list[np.ndarray[Any, Any]]) -> Dataset:
    """A binary DICOM SEG of the masks, one frame per source slice (as the agent writes)."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name="test-seg", family=codes.cid7162.ArtificialIntelligence, version="0.1"
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Liver",
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=np.stack(masks).astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=generate_uid(),
        series_number=9901,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="liver-agent tests",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
        omit_empty_frames=False,
    )


def processed_job(
    ctx: AgentContext,
    *,
    n: int = 6,
    status: JobStatus = JobStatus.DONE,
    delivery: DeliveryStatus | None = None,
    demo: bool = True,
    accession: str = "ACC0042",
) -> tuple[int, list[Dataset]]:
    """A received, completed and "processed" study (see :func:`mark_processed`) with a
    localizer series beside the chosen T2 series."""
    study_uid = generate_uid()
    datasets, masks = mr_series(study_uid, n, accession=accession)
    localizer, _ = mr_series(
        study_uid, 2, rows=16, accession=accession, description="localizer", series_number=1
    )
    ingest(ctx, datasets + localizer)
    job_id = complete(ctx, study_uid)
    mark_processed(
        ctx.sessions,
        ctx.settings.results.path,
        job_id,
        datasets,
        masks,
        other_series_uid=str(localizer[0].SeriesInstanceUID),
        status=status,
        delivery=delivery,
        demo=demo,
    )
    return job_id, datasets


def mark_processed(
    sessions: sessionmaker[Session],
    results_root: Path,
    job_id: int,
    datasets: list[Dataset],
    masks: list[np.ndarray[Any, Any]],
    *,
    other_series_uid: str | None = None,
    status: JobStatus = JobStatus.DONE,
    delivery: DeliveryStatus | None = None,
    demo: bool = True,
) -> None:
    """Write what a worker would: result fields, selection details, stage timings, events, a
    SEG output file of ``masks`` (one frame per slice of ``datasets``), optionally a delivery,
    and the final ``status``. The chosen slice is the middle one."""
    chosen = len(datasets) // 2
    seg = build_seg(datasets, masks)
    study_uid = str(datasets[0].StudyInstanceUID)
    folder = results_root.resolve() / study_uid / str(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    seg_path = folder / "seg.dcm"
    seg.save_as(seg_path)
    series_uid = str(datasets[0].SeriesInstanceUID)
    candidates: list[dict[str, Any]] = [
        {
            "series_instance_uid": series_uid,
            "description": str(datasets[0].SeriesDescription),
            "score": 7.5,
            "eligible": True,
            "reasons": ["T2-weighted (TE 90 ms)", "axial", "covers the abdomen"],
        }
    ]
    if other_series_uid is not None:
        candidates.insert(
            0,
            {
                "series_instance_uid": other_series_uid,
                "description": "localizer",
                "score": -5.0,
                "eligible": False,
                "reasons": ["fewer than 10 slices", "description says localizer"],
            },
        )
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        job.started_at = utcnow()
        job.worker = "test:0"
        job.attempts = 1
        job.evaluated = True
        job.series_instance_uid = series_uid
        job.slice_index = chosen
        job.slice_sop_instance_uid = str(datasets[chosen].SOPInstanceUID)
        job.probability = 0.83
        job.label = "cirrhosis"
        job.liver_area_mm2 = 15234.0
        job.liver_volume_ml = 1480.0
        job.model_name = "liver-cirrhosis-resnet50-demo"
        job.model_version = "0.1.0"
        job.model_demo = demo
        job.details = {
            "selection": {"series_instance_uid": series_uid, "candidates": candidates},
            "classification_mode": "masked",
            "threshold": 0.5,
            "models": [
                {
                    "task": "segmentation",
                    "name": "liver-seg-unet-demo",
                    "version": "0.1.0",
                    "demo": demo,
                    "architecture": "unet-resnet34",
                },
            ],
        }
        for stage, seconds in (
            ("select", 0.01),
            ("load", 0.2),
            ("segment", 1.5),
            ("classify", 0.3),
        ):
            jobs.record_stage(session, job_id, stage, seconds)
        jobs.add_event(session, job_id, EventKind.RESULT, f"cirrhosis (p=0.830) on slice {chosen}")
        output = Output(
            job_id=job_id,
            kind="seg",
            sop_class_uid=SEG_STORAGE,
            sop_instance_uid=str(seg.SOPInstanceUID),
            series_instance_uid=str(seg.SeriesInstanceUID),
            path=str(seg_path),
            size_bytes=seg_path.stat().st_size,
        )
        session.add(output)
        session.flush()
        if delivery is not None:
            dead = delivery == DeliveryStatus.DEAD
            row = Delivery(
                job_id=job_id,
                destination="pacs",
                status=delivery,
                attempts=3 if dead else 1,
                last_error="association_failed: PACS down" if dead else None,
                next_attempt_at=utcnow() if delivery == DeliveryStatus.PENDING else None,
            )
            session.add(row)
            session.flush()
            session.add(DeliveryItem(delivery_id=row.id, output_id=output.id))
        failed = status == JobStatus.FAILED
        jobs.write_status(
            session,
            job,
            status,
            reason_code="delivery_dead" if failed else None,
            reason="a delivery failed after its last retry" if failed else None,
        )
