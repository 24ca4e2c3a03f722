"""Cohort pieces without a network: the CSV of a pull, the series prefilter, the patient key,
the source settings, and the completion rule that never makes a job of a cohort study."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from agent.cohorts.process import patient_key, patient_key_salt
from agent.cohorts.pull import CohortInputError, requests_from_csv
from agent.completion import complete_ready_studies
from agent.context import AgentContext, open_context
from agent.settings import Source, load_settings
from pipeline.selection import load_rules
from pipeline.selection.prefilter import SeriesSummary, candidate_series
from storage import cohorts as store
from storage import queries
from storage.models import AssociationStatus, Job, Study, utcnow
from tests.agent.http_data import mr_series, part10, settings_for


def test_csv_by_accession_or_study_uid(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("AccessionNumber,notes\nA1,x\n,empty\nA2,y\nA1,again\n")
    assert requests_from_csv(f) == ["accession:A1", "accession:A2"]
    g = tmp_path / "b.csv"
    g.write_text("\ufeffstudy_uid,accession\n1.2.3,A9\n,A8\n")
    # a row with a study UID is taken by UID, one without by its accession number
    assert requests_from_csv(g) == ["study:1.2.3", "accession:A8"]


def test_csv_without_a_usable_column_says_which_it_needs(tmp_path: Path) -> None:
    f = tmp_path / "c.csv"
    f.write_text("patient,date\nX,1\n")
    with pytest.raises(CohortInputError, match="'accession' or a 'study_uid' column"):
        requests_from_csv(f)


def _series(description: str, modality: str = "MR", instances: int | None = 30) -> SeriesSummary:
    return SeriesSummary(generate_uid(), modality, description, 1, instances)


def test_prefilter_keeps_what_the_selection_may_choose() -> None:
    rules = load_rules()
    series = [
        _series("t2_haste_tra_mbh"),  # the axial T2
        _series("T2W_SSh_COR"),  # coronal: orientation is unknown before retrieval
        _series("localizer", instances=3),
        _series("ep2d_diff_b50_800_tra"),
        _series("ADC map"),
        _series("AI Liver SEG", modality="SEG", instances=1),
        _series("vibe_dyn_arterial"),
        _series("no name", instances=None),
    ]
    wanted, decisions = candidate_series(series, rules)
    assert [s.description for s in wanted] == ["t2_haste_tra_mbh", "T2W_SSh_COR", "no name"]
    reasons = {d.series.description: d.reason for d in decisions if not d.fetch}
    assert "fewer than 10 slices" in reasons["localizer"]
    assert "diffusion" in reasons["ep2d_diff_b50_800_tra"]
    assert "not MR" in reasons["AI Liver SEG"]


def test_patient_key_is_salted_and_stable(tmp_path: Path) -> None:
    settings = load_settings(cohorts={"path": tmp_path / "cohorts"})
    salt = patient_key_salt(settings)
    assert patient_key_salt(settings) == salt  # generated once, then read
    assert (tmp_path / "cohorts" / "patient-key-salt").stat().st_mode & 0o077 == 0
    key = patient_key(salt, "PH-000123")
    assert key == patient_key(salt, "PH-000123")
    assert key is not None
    assert len(key) == 16
    assert "000123" not in key
    assert key != patient_key("other-salt", "PH-000123")
    assert patient_key(salt, None) is None


def test_source_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="ae_title, host and port"):
        Source(name="pacs", kind="dimse", host="h")
    with pytest.raises(ValidationError, match="retrieves with wado"):
        Source(name="web", kind="dicomweb", base_url="http://h/dicom-web", retrieve="move")
    with pytest.raises(ValidationError, match="source names must be unique"):
        load_settings(
            sources=[
                {"name": "a", "kind": "dicomweb", "base_url": "http://x", "retrieve": "wado"},
                {"name": "a", "kind": "dicomweb", "base_url": "http://y", "retrieve": "wado"},
            ]
        )


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    context = open_context(settings_for(tmp_path, completion={"quiet_seconds": 0.0}))
    yield context
    context.ingestor.close()
    context.engine.dispose()


def test_a_cohort_study_never_becomes_a_job(ctx: AgentContext) -> None:
    cohort_uid, pushed_uid = generate_uid(), generate_uid()
    with ctx.sessions.begin() as session:
        cohort = store.get_or_create_cohort(session, "c", source="pacs", query=None)
        store.add_requested(session, cohort, f"study:{cohort_uid}", study_instance_uid=cohort_uid)
    for uid in (cohort_uid, pushed_uid):
        association = ctx.ingestor.begin(
            calling_ae="PACS", called_ae="LIVERAI", peer_host="127.0.0.1", protocol="dimse"
        )
        for ds in mr_series(uid, 3, rows=16)[0]:
            ctx.ingestor.store(part10(ds), association_id=association, source_ae="PACS")
        ctx.ingestor.end(association, AssociationStatus.RELEASED)
    with ctx.sessions.begin() as session:
        session.execute(update(Study).values(last_received_at=utcnow() - dt.timedelta(seconds=600)))
    with ctx.sessions() as session:  # nor does T2-first start one
        candidates = queries.receiving_studies_without_job(session)
        assert store.study_row_id(session, cohort_uid) not in candidates
        assert store.study_row_id(session, pushed_uid) in candidates
    created = complete_ready_studies(ctx.sessions, ctx.settings.completion, ctx.metrics)
    with ctx.sessions() as session:
        jobs = session.scalars(select(Job)).all()
        assert [j.id for j in jobs] == created
        assert [j.study.study_instance_uid for j in jobs] == [pushed_uid]
        assert store.stored_series(session, cohort_uid) != {}  # its instances are kept
