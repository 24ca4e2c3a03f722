"""STOW-RS ingress through the app (TestClient), the multipart parser, and the metrics it moves."""

from __future__ import annotations

import datetime as dt
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from agent.completion import complete_ready_studies
from agent.context import AgentContext, open_context
from agent.delivery import Deliverer
from agent.dicom_status import StoreStatus
from agent.http.app import create_app
from agent.http.multipart import MultipartError, MultipartParser, parse_content_type
from agent.settings import CompletionSettings
from storage import queries
from storage.models import Association, AssociationStatus, DeliveryStatus, Instance, JobStatus
from tests.agent.http_data import AUTH, mark_processed, mr_series, part10, settings_for

BOUNDARY = "liver-agent-test-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'


def multipart(parts: list[tuple[str | None, bytes]], *, preamble: bytes = b"\r\n") -> bytes:
    """A multipart/related body; each part as (Content-Type or None, content)."""
    body = bytearray(preamble)
    for content_type, content in parts:
        body += f"--{BOUNDARY}\r\n".encode()
        if content_type:
            body += f"Content-Type: {content_type}\r\n".encode()
        body += b"\r\n" + content + b"\r\n"
    body += f"--{BOUNDARY}--\r\n".encode()
    return bytes(body)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    context = open_context(settings_for(tmp_path))
    yield context
    context.engine.dispose()


@pytest.fixture
def client(ctx: AgentContext) -> TestClient:
    return TestClient(create_app(ctx), headers=AUTH)


def _series(n: int = 3, study_uid: str | None = None) -> list[Dataset]:
    datasets, _ = mr_series(study_uid or generate_uid(), n, rows=16)
    return datasets


def _stow(
    client: TestClient, body: bytes, path: str = "/dicomweb/studies", **headers: str
) -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": STOW_TYPE, **headers})


def _json(response: httpx.Response) -> Dataset:
    return Dataset.from_json(response.json())


def test_stow_stores_every_instance_durably(client: TestClient, ctx: AgentContext) -> None:
    datasets = _series(3)
    response = _stow(client, multipart([("application/dicom", part10(ds)) for ds in datasets]))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    result = _json(response)
    assert "FailedSOPSequence" not in result
    assert [str(i.ReferencedSOPInstanceUID) for i in result.ReferencedSOPSequence] == [
        str(ds.SOPInstanceUID) for ds in datasets
    ]
    assert all(
        str(i.ReferencedSOPClassUID) == str(ds.SOPClassUID)
        for i, ds in zip(result.ReferencedSOPSequence, datasets, strict=True)
    )
    assert "RetrieveURL" in result  # Type 2: present, empty (no WADO-RS here)
    raw = response.json()
    assert raw["00081199"]["vr"] == "SQ"
    with ctx.sessions() as session:
        paths = session.scalars(select(Instance.path)).all()
        association = session.scalars(select(Association)).one()
    assert len(paths) == 3
    assert all(ctx.spool.path_of(p).stat().st_size > 0 for p in paths)
    assert association.protocol == "stow"
    assert association.calling_ae == "STOW"
    assert association.status == AssociationStatus.RELEASED
    assert association.instances_received == 3
    # released association: the completion rule sees the study once it is quiet
    with ctx.sessions() as session:
        ready = queries.studies_ready(
            session,
            now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10),
            quiet_seconds=5,
            stable_seconds=60,
        )
    assert len(ready) == 1


def test_a_non_dicom_part_fails_and_the_valid_one_is_stored(
    client: TestClient, ctx: AgentContext
) -> None:
    good = _series(1)[0]
    body = multipart(
        [
            ("application/dicom", part10(good)),
            ("text/plain", b"this is not an image"),
            ("application/dicom", b"\x00" * 200 + b"garbage"),
        ]
    )
    response = _stow(client, body)
    assert response.status_code == 202
    result = _json(response)
    assert [str(i.ReferencedSOPInstanceUID) for i in result.ReferencedSOPSequence] == [
        str(good.SOPInstanceUID)
    ]
    reasons = [int(i.FailureReason) for i in result.FailedSOPSequence]
    assert reasons == [StoreStatus.CANNOT_UNDERSTAND, StoreStatus.CANNOT_UNDERSTAND]
    with ctx.sessions() as session:
        assert session.scalars(select(Instance.sop_instance_uid)).all() == [
            str(good.SOPInstanceUID)
        ]


def test_a_part_without_preamble_is_stored_as_part10(client: TestClient, ctx: AgentContext) -> None:
    ds = _series(1)[0]
    bare = part10(ds)[132:]  # starts with the File Meta Information group
    assert bare[:2] == b"\x02\x00"
    response = _stow(client, multipart([("application/dicom", bare)]))
    assert response.status_code == 200
    with ctx.sessions() as session:
        path = session.scalars(select(Instance.path)).one()
    assert ctx.spool.path_of(path).read_bytes() == part10(ds)


def test_all_parts_failing_is_409(client: TestClient) -> None:
    response = _stow(client, multipart([("application/dicom", b"not dicom at all")]))
    assert response.status_code == 409
    assert int(_json(response).FailedSOPSequence[0].FailureReason) == 0xC000


def test_study_url_refuses_instances_of_another_study(
    client: TestClient, ctx: AgentContext
) -> None:
    study_uid = generate_uid()
    ours = _series(2, study_uid)
    other = _series(1)[0]
    body = multipart([("application/dicom", part10(ds)) for ds in [*ours, other]])
    response = _stow(client, body, f"/dicomweb/studies/{study_uid}")
    assert response.status_code == 202
    result = _json(response)
    assert len(result.ReferencedSOPSequence) == 2
    failed = result.FailedSOPSequence[0]
    assert str(failed.ReferencedSOPInstanceUID) == str(other.SOPInstanceUID)
    assert int(failed.FailureReason) == StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    with ctx.sessions() as session:
        assert (
            session.scalar(
                select(Instance).where(Instance.sop_instance_uid == str(other.SOPInstanceUID))
            )
            is None
        )


def test_spool_below_minimum_answers_out_of_resources(tmp_path: Path) -> None:
    ctx = open_context(settings_for(tmp_path, spool={"min_free_mb": 2**40}))
    try:
        client = TestClient(create_app(ctx), headers=AUTH)
        response = _stow(client, multipart([("application/dicom", part10(_series(1)[0]))]))
        assert response.status_code == 409
        assert (
            int(_json(response).FailedSOPSequence[0].FailureReason) == StoreStatus.OUT_OF_RESOURCES
        )
    finally:
        ctx.engine.dispose()


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/dicom", 415),
        ('multipart/related; type="application/dicom+xml"; boundary=x', 415),
        ('multipart/related; type="application/dicom"', 400),
        ("multipart/form-data; boundary=x", 415),
    ],
)
def test_wrong_request_types_are_refused(
    client: TestClient, content_type: str, status: int
) -> None:
    response = client.post(
        "/dicomweb/studies", content=b"x", headers={"Content-Type": content_type}
    )
    assert response.status_code == status


def test_invalid_study_uid_and_empty_body_are_400(client: TestClient) -> None:
    assert _stow(client, multipart([]), "/dicomweb/studies/1.2.abc").status_code == 400
    assert _stow(client, multipart([])).status_code == 400
    assert _stow(client, b"no delimiter here").status_code == 400


def test_unacceptable_accept_is_406(client: TestClient) -> None:
    body = multipart([("application/dicom", part10(_series(1)[0]))])
    assert _stow(client, body, Accept="application/dicom+xml").status_code == 406


def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_move_when_instances_arrive_and_jobs_finish(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: the delivery fails
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    settings = settings_for(
        tmp_path,
        destinations=[
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": closed_port}
        ],
        delivery={"retry_seconds": []},
    )
    ctx = open_context(settings)
    try:
        client = TestClient(create_app(ctx), headers=AUTH)
        before = client.get("/metrics")
        assert before.status_code == 200
        assert before.headers["content-type"].startswith("text/plain")
        received = 'liver_agent_instances_received_total{protocol="stow"}'
        rejected = 'liver_agent_instances_rejected_total{protocol="stow",reason="media_type"}'
        assert _metric(before.text, received) == 0

        datasets, masks = mr_series(generate_uid(), 3, rows=16)
        parts = [("application/dicom", part10(ds)) for ds in datasets]
        assert _stow(client, multipart([*parts, ("text/plain", b"x")])).status_code == 202
        # the completion rule queues the job (its code path moves studies_completed)
        jobs = complete_ready_studies(
            ctx.sessions, CompletionSettings(quiet_seconds=0, stable_seconds=60), ctx.metrics
        )
        assert len(jobs) == 1
        # a worker's result with one delivery; the deliverer's failed attempt kills it
        mark_processed(
            ctx.sessions,
            settings.results.path,
            jobs[0],
            datasets,
            masks,
            status=JobStatus.DELIVERING,
            delivery=DeliveryStatus.PENDING,
        )
        assert Deliverer(settings, ctx.sessions, ctx.metrics).deliver_due() == 1
        ctx.metrics.stage_seconds.labels("segment").observe(1.5)  # observed by the worker only

        text = client.get("/metrics").text
        assert _metric(text, received) == 3
        assert _metric(text, rejected) == 1
        assert _metric(text, "liver_agent_spool_bytes") > 0
        assert _metric(text, "liver_agent_studies_completed_total") == 1
        assert _metric(text, "liver_agent_jobs_finished_total", '{status="failed"}') == 1
        failures = '{destination="pacs",outcome="failure"}'
        assert _metric(text, "liver_agent_delivery_attempts_total", failures) == 1
        assert _metric(text, "liver_agent_delivery_failures_total", '{destination="pacs"}') == 1
        assert _metric(text, "liver_agent_stage_seconds_count", '{stage="segment"}') == 1
        assert "liver_agent_queue_depth" in text
        assert client.get(f"/api/jobs/{jobs[0]}").json()["status"] == "failed"
    finally:
        ctx.engine.dispose()


# --- the multipart parser -----------------------------------------------------------------


def _parse(body: bytes, chunk: int) -> list[tuple[dict[str, str], bytes]]:
    parser = MultipartParser(BOUNDARY)
    parts = []
    for start in range(0, len(body), chunk):
        parts += parser.feed(body[start : start + chunk])
    parser.close()
    return [(p.headers, p.content) for p in parts]


@pytest.mark.parametrize("chunk", [1, 7, 64, 10**6])
def test_parser_splits_parts_whatever_the_chunking(chunk: int) -> None:
    payloads = [b"\r\n--" + BOUNDARY.encode()[:-1] + b"\r\n", b"", b"\xff" * 300 + b"\r", b"x\n"]
    body = (
        multipart([("application/dicom", p) for p in payloads], preamble=b"preamble text\r\n")
        + b"epilogue that is ignored"
    )
    parts = _parse(body, chunk)
    assert [content for _, content in parts] == payloads
    assert all(headers == {"content-type": "application/dicom"} for headers, _ in parts)


def test_parser_accepts_bare_lf_and_parts_without_headers() -> None:
    body = (
        f"--{BOUNDARY}\nContent-Type: application/dicom\n\nabc\n--{BOUNDARY}\n\ndef\n--{BOUNDARY}--"
    ).encode()
    parts = _parse(body, 5)
    assert parts == [({"content-type": "application/dicom"}, b"abc"), ({}, b"def")]


def test_parser_refuses_truncated_bodies() -> None:
    parser = MultipartParser(BOUNDARY)
    parser.feed(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nabc".encode())
    with pytest.raises(MultipartError, match="before the closing"):
        parser.close()
    empty = MultipartParser(BOUNDARY)
    empty.feed(b"nothing")
    with pytest.raises(MultipartError, match="no multipart delimiter"):
        empty.close()


def test_content_type_parameters() -> None:
    parsed = parse_content_type('Multipart/Related; type="application/dicom"; boundary="a b;c"')
    assert (parsed.media_type, parsed.type, parsed.boundary) == (
        "multipart/related",
        "application/dicom",
        "a b;c",
    )
    with pytest.raises(MultipartError):
        parse_content_type("multipart/related")
