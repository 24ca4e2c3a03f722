"""``cohort run``: selection, segmentation, caudate slice (and the classifier's probability)
on every retrieved study of a cohort. Nothing is sent: the result of each study is kept in its
``cohort_studies`` row and the caudate-level slice, its liver mask and its neighbours in
``<cohorts.path>/<cohort>/studies/<Study Instance UID>.npz`` for the export."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.context import AgentContext
from agent.settings import Settings
from storage import cohorts as store
from storage import queries
from storage.models import Cohort, CohortStudyStatus

if TYPE_CHECKING:
    from pipeline.results import PipelineResult
    from pipeline.run import Models

logger = logging.getLogger(__name__)

#: statuses ``cohort run`` takes (``--again`` adds the ones already processed)
TO_PROCESS = [CohortStudyStatus.RETRIEVED, CohortStudyStatus.ERROR]
PROCESSED = [CohortStudyStatus.PROCESSED, CohortStudyStatus.NOT_EVALUATED]


@dataclass(frozen=True)
class Processed:
    study_instance_uid: str
    status: CohortStudyStatus
    reason_code: str | None
    reason: str | None


def cohort_dir(settings: Settings, name: str) -> Path:
    return settings.cohorts.path / name


def slice_file(settings: Settings, name: str, study_instance_uid: str) -> Path:
    return cohort_dir(settings, name) / "studies" / f"{study_instance_uid}.npz"


def patient_key_salt(settings: Settings) -> str:
    """The salt of patient keys: from the settings, else generated once into a private file."""
    if settings.cohorts.patient_key_salt is not None:
        return settings.cohorts.patient_key_salt.get_secret_value()
    path = settings.cohorts.path / "patient-key-salt"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(salt + "\n")
    return salt


def patient_key(salt: str, patient_id: str | None) -> str | None:
    """A salted SHA-256 prefix of the Patient ID: the same patient, the same key, in every
    export of this agent; the ID itself never leaves (train/val/test splits by patient)."""
    if not patient_id:
        return None
    return hashlib.sha256(f"{salt}\x00{patient_id}".encode()).hexdigest()[:16]


def process_cohort(
    ctx: AgentContext,
    cohort: Cohort,
    models: Models,
    *,
    again: bool = False,
    workers: int = 1,
    on_done: Callable[[Processed], None] | None = None,
) -> list[Processed]:
    """Run the pipeline on the cohort's retrieved studies (and, with ``again``, on those
    processed before), ``workers`` studies at a time (threads sharing the loaded networks, as
    the agent's workers do); each row ends ``processed``, ``not_evaluated`` or ``error``."""
    statuses = TO_PROCESS + (PROCESSED if again else [])
    with ctx.sessions() as session:
        rows = [
            (r.id, r.study_instance_uid)
            for r in store.cohort_studies(session, cohort, statuses)
            if r.study_instance_uid
        ]
    salt = patient_key_salt(ctx.settings)
    out = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cohort-run") as pool:
        futures = [
            pool.submit(_process_one, ctx, cohort.name, row_id, uid, models, salt)
            for row_id, uid in rows
            if uid is not None
        ]
        for future in as_completed(futures):
            done = future.result()
            out.append(done)
            if on_done is not None:
                on_done(done)
    return out


def _process_one(
    ctx: AgentContext, name: str, row_id: int, uid: str, models: Models, salt: str
) -> Processed:
    from pipeline.errors import PipelineError
    from pipeline.run import PipelineOptions, result_to_json, run_pipeline
    from pipeline.study_headers import scan_study

    settings = ctx.settings
    with ctx.sessions() as session:
        study_id = store.study_row_id(session, uid)
        paths = (
            []
            if study_id is None
            else [ctx.spool.path_of(p) for p in queries.instance_paths(session, study_id)]
        )
    if not paths:
        return _record(
            ctx,
            row_id,
            uid,
            CohortStudyStatus.ERROR,
            "no_instances",
            "no instance of the study is in the spool: pull it again",
        )
    options = PipelineOptions(
        caudate_fraction=settings.pipeline.caudate_fraction,
        selection_rules=settings.pipeline.selection_rules,
    )
    try:
        study = scan_study(paths)
        result = run_pipeline(study, models, options)
    except PipelineError as err:
        return _record(ctx, row_id, uid, CohortStudyStatus.ERROR, err.code, err.message)
    key = patient_key(salt, str(study.reference().get("PatientID") or "") or None)
    details = result_to_json(result)
    saved = _save_slices(slice_file(settings, name, uid), result)
    details["slice_file"] = saved
    if result.evaluated:
        return _record(
            ctx,
            row_id,
            uid,
            CohortStudyStatus.PROCESSED,
            None,
            None,
            result=details,
            patient_key=key,
        )
    return _record(
        ctx,
        row_id,
        uid,
        CohortStudyStatus.NOT_EVALUATED,
        result.reason_code,
        result.reason,
        result=details,
        patient_key=key,
    )


def _record(
    ctx: AgentContext,
    row_id: int,
    uid: str,
    status: CohortStudyStatus,
    code: str | None,
    reason: str | None,
    **values: Any,
) -> Processed:
    with ctx.sessions.begin() as session:
        store.set_status(session, row_id, status, reason_code=code, reason=reason, **values)
    logger.info("cohort study %s: %s%s", uid, status.value, f" ({code})" if code else "")
    return Processed(uid, status, code, reason)


def _save_slices(path: Path, result: PipelineResult) -> bool:
    """The caudate-level slice (stored values after rescale), its liver mask, the slices
    above and below (empty arrays at the stack's ends) and the pixel spacing; False when
    the pipeline stopped before it found the slice."""
    volume, segmentation, caudate = result.volume, result.segmentation, result.caudate
    if volume is None or segmentation is None or caudate is None:
        path.unlink(missing_ok=True)
        return False
    k, n = caudate.index, volume.shape[0]
    empty = np.zeros((0, 0), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        temporary,
        image=volume.pixels[k].astype(np.float32),
        mask=segmentation.mask[k].astype(np.uint8),
        # slices are sorted feet to head along the normal: k + 1 is above (cranial)
        above=volume.pixels[k + 1].astype(np.float32) if k + 1 < n else empty,
        below=volume.pixels[k - 1].astype(np.float32) if k > 0 else empty,
        pixel_spacing=np.asarray(volume.pixel_spacing, dtype=np.float32),
    )
    temporary.replace(path)
    return True
