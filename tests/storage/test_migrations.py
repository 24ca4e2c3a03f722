"""Migrations on a real SQLite file: the head schema is the models' schema, and the model-mode
audit trail (0002) upgrades, downgrades and upgrades again."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from storage import model_modes
from storage.db import (
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    make_sessionmaker,
    upgrade,
)
from storage.models import Base


def test_head_schema_matches_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_model_mode_changes_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    downgrade(engine, "0001")
    assert "model_mode_changes" not in inspect(engine).get_table_names()
    upgrade(engine)
    with make_sessionmaker(engine).begin() as session:
        model_modes.add_mode_change(session, model_name="m", mode="silent", actor="t", reason="r")
    with make_sessionmaker(engine)() as session:
        assert [c.model_name for c in model_modes.mode_changes(session)] == ["m"]
    engine.dispose()


def test_feedback_is_append_only_and_0003_downgrades(tmp_path: Path) -> None:
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import DatabaseError

    from storage import api_tokens, feedback
    from storage.models import Job, JobStatus, Study

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    with make_sessionmaker(engine).begin() as session:
        study = Study(study_instance_uid="1.2.3")
        session.add(study)
        session.flush()
        job = Job(study_id=study.id, status=JobStatus.DONE, label="cirrhosis")
        session.add(job)
        session.flush()
        feedback.add_feedback(
            session, job_id=job.id, agree=True, reference_positive=True, user="dr", source="api"
        )
    for statement in ("UPDATE feedback SET agree = 0", "DELETE FROM feedback"):
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with make_sessionmaker(engine).begin() as session:
        api_tokens.add_token(
            session, name="a", role="viewer", token_sha256="0" * 64, created_by="t"
        )
    downgrade(engine, "0002")
    assert {"feedback", "api_tokens"}.isdisjoint(inspect(engine).get_table_names())
    upgrade(engine)
    assert {"feedback", "api_tokens"} <= set(inspect(engine).get_table_names())


def test_cohort_tables_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    assert {"cohorts", "cohort_studies"} <= set(inspect(engine).get_table_names())
    downgrade(engine, "0003")
    assert "cohort_studies" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert "cohort_studies" in inspect(engine).get_table_names()
    engine.dispose()
