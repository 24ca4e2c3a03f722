"""A version that comes after an earlier one was delivered says it replaces it: higher series
numbers, "v2 replaces v1" in the series description, and in its SR the earlier SR as
predecessor document plus a sentence a reader sees (real DCMTK storescp as the PACS)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from agent.context import AgentContext, open_context
from agent.delivery import Deliverer
from agent.jobs import lifecycle
from agent.model_provider import ModelProvider
from agent.worker import Worker
from pipeline.outputs.replacement import EarlierResult, replacement_description
from storage.models import Job, JobStatus
from tests.agent.http_data import complete, ingest
from tests.agent.test_delivery import StoreSCP, _job_with_result, _settings
from tests.integration.processes import free_port
from tests.pipeline.outputs.synthetic_mr import make_mr_series, make_result
from tests.pipeline.outputs.validation import assert_valid

pytestmark = pytest.mark.integration

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def ctx(tmp_path: Path, port: int) -> Iterator[AgentContext]:
    context = open_context(_settings(tmp_path, port))
    yield context
    context.ingestor.close()
    context.engine.dispose()


@pytest.fixture
def scp(tmp_path: Path, port: int) -> Iterator[StoreSCP]:
    server = StoreSCP(tmp_path / "received", port)
    server.start()
    yield server
    server.stop()


def _by_kind(files: list[Path]) -> dict[str, Dataset]:
    out: dict[str, Dataset] = {}
    for path in files:
        ds = dcmread(path)
        kind = "sr" if ds.SOPClassUID == SR_CLASS else str(ds.Modality).lower()
        out[kind] = ds
    return out


def _texts(sr: Dataset) -> list[str]:
    found: list[str] = []

    def walk(items: list[Dataset]) -> None:
        for item in items:
            if item.get("ValueType") == "TEXT":
                found.append(str(item.TextValue))
            walk(list(item.get("ContentSequence", [])))

    walk(list(sr.ContentSequence))
    return found


def test_a_version_after_a_delivered_one_says_it_replaces_it(
    ctx: AgentContext, scp: StoreSCP
) -> None:
    first = _job_with_result(ctx)
    deliverer = Deliverer(ctx.settings, ctx.sessions, ctx.metrics)
    deliverer.deliver_due()
    v1 = _by_kind(scp.received())
    assert int(v1["sr"].SeriesNumber) == 9902
    assert "replaces" not in str(v1["sr"].SeriesDescription)
    assert "PredecessorDocumentsSequence" not in v1["sr"]
    with ctx.sessions() as session:
        assert session.get_one(Job, first).status == JobStatus.DONE
        study_uid = session.get_one(Job, first).study.study_instance_uid

    # more images of the study arrive after v1 was delivered: version 2 runs and is sent
    more = make_mr_series(12, 64, 64)
    for ds in more:
        ds.StudyInstanceUID = study_uid
    ingest(ctx, more)
    second = complete(ctx, study_uid)
    with ctx.sessions.begin() as session:
        session.get_one(Job, second).study.source_ae = "DEST"  # sent by the PACS again
    with ctx.sessions.begin() as session:
        claimed = lifecycle.claim_next(session, worker="test")
    assert claimed is not None
    assert claimed.job_id == second
    Worker(
        ctx.settings,
        ctx.sessions,
        ctx.spool,
        ModelProvider(ctx.settings.model),
        ctx.metrics,
        threading.Event(),
        name="test",
    ).publish(claimed, make_result(more))
    before = set(scp.received())
    assert deliverer.deliver_due() == 1
    v2_files = [p for p in scp.received() if p not in before]
    v2 = _by_kind(v2_files)
    for path in v2_files:
        assert_valid(path)  # the marks keep every object valid (dciodvfy)
    with ctx.sessions() as session:
        job = session.get_one(Job, second)
        assert job.status == JobStatus.DONE, [d.last_error for d in job.deliveries]

    assert set(v2) == set(v1) == {"seg", "sr", "ot"}  # SEG, SR, SC (modality OT)
    assert int(v2["seg"].SeriesNumber) == 9911
    assert int(v2["sr"].SeriesNumber) == 9912
    assert int(v2["ot"].SeriesNumber) == 9913
    for kind, ds in v2.items():
        assert str(ds.SeriesDescription).endswith("v2 replaces v1 - RESEARCH USE ONLY"), kind
        assert len(str(ds.SeriesDescription)) <= 64
        assert ds.SeriesInstanceUID != v1[kind].SeriesInstanceUID
    (study,) = v2["sr"].PredecessorDocumentsSequence
    assert study.StudyInstanceUID == study_uid
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == v1["sr"].SeriesInstanceUID
    (sop,) = series.ReferencedSOPSequence
    assert sop.ReferencedSOPInstanceUID == v1["sr"].SOPInstanceUID
    assert sop.ReferencedSOPClassUID == SR_CLASS
    sentences = [t for t in _texts(v2["sr"]) if "replaces the earlier result" in t]
    assert len(sentences) == 1
    assert "version 2" in sentences[0]
    assert "(version 1)" in sentences[0]
    assert str(v1["sr"].SOPInstanceUID) in sentences[0]
    assert not [t for t in _texts(v1["sr"]) if "replaces" in t]


def test_the_description_keeps_the_label_and_research_use_only_within_64() -> None:
    earlier = EarlierResult(version=1, replaced_by=12, study_instance_uid="1.2.3")
    long = "DEMO AI Liver SR - NOT EVALUATED - RESEARCH USE ONLY"
    text = replacement_description(long, earlier)
    assert len(text) <= 64
    assert text.endswith("v12 replaces v1 - RESEARCH USE ONLY")
    assert text.startswith("DEMO AI Liver SR")
    with pytest.raises(ValueError, match="cannot replace"):
        EarlierResult(version=2, replaced_by=2, study_instance_uid="1.2.3")
