"""Completion after a crash or a broken send: an aborted association means more may come, and
after a restart the sender gets the whole stable period to resend. Real SQLite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import update

from agent.completion import complete_ready_studies
from agent.context import AgentContext, open_context
from storage import queries
from storage.models import AssociationStatus, Study, utcnow
from tests.agent.http_data import mr_series, part10, settings_for

QUIET = 5.0
STABLE = 60.0


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AgentContext]:
    context = open_context(
        settings_for(tmp_path, completion={"quiet_seconds": QUIET, "stable_seconds": STABLE})
    )
    yield context
    context.ingestor.close()
    context.engine.dispose()


def _send(ctx: AgentContext, study_uid: str, n: int, end: AssociationStatus | None) -> None:
    """One association bringing ``n`` instances, ended as ``end`` (None: left open)."""
    association = ctx.ingestor.begin(
        calling_ae="PACS", called_ae="LIVERAI", peer_host="127.0.0.1", protocol="dimse"
    )
    datasets, _ = mr_series(study_uid, n, rows=16)
    for ds in datasets:
        ctx.ingestor.store(part10(ds), association_id=association, source_ae="PACS")
    if end is not None:
        ctx.ingestor.end(association, end)


def _last_received(ctx: AgentContext, study_uid: str, ago: float) -> None:
    with ctx.sessions.begin() as session:
        session.execute(
            update(Study)
            .where(Study.study_instance_uid == study_uid)
            .values(last_received_at=utcnow() - dt.timedelta(seconds=ago))
        )


def _ready(ctx: AgentContext, since: dt.datetime | None = None) -> list[int]:
    return complete_ready_studies(
        ctx.sessions, ctx.settings.completion, ctx.metrics, watching_since=since
    )


def test_released_study_completes_after_the_quiet_period(ctx: AgentContext) -> None:
    study = generate_uid()
    _send(ctx, study, 2, AssociationStatus.RELEASED)
    _last_received(ctx, study, QUIET + 1)
    assert len(_ready(ctx)) == 1


def test_an_aborted_association_means_more_may_come(ctx: AgentContext) -> None:
    study = generate_uid()
    _send(ctx, study, 2, AssociationStatus.ABORTED)
    _last_received(ctx, study, QUIET + 1)
    assert _ready(ctx) == [], "a study whose sender broke off completed after the quiet period"
    _last_received(ctx, study, STABLE + 1)
    assert len(_ready(ctx)) == 1  # the stable rule still ends the wait


def test_a_resend_released_after_an_abort_completes_after_the_quiet_period(
    ctx: AgentContext,
) -> None:
    study = generate_uid()
    _send(ctx, study, 2, AssociationStatus.ABORTED)
    _send(ctx, study, 3, AssociationStatus.RELEASED)
    _last_received(ctx, study, QUIET + 1)
    assert len(_ready(ctx)) == 1


def test_after_a_restart_the_sender_gets_the_stable_period_to_resend(ctx: AgentContext) -> None:
    study = generate_uid()
    _send(ctx, study, 2, None)  # the agent was killed mid-association
    with ctx.sessions.begin() as session:  # what the restart does to it
        queries.abort_open_associations(session)
    _last_received(ctx, study, 10 * STABLE)  # the agent was down a long time
    started = utcnow()
    assert _ready(ctx, since=started) == [], "completed at once on restart"
    assert _ready(ctx, since=started - dt.timedelta(seconds=STABLE - 1)) == []
    assert len(_ready(ctx, since=started - dt.timedelta(seconds=STABLE + 1))) == 1
