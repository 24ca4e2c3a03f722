"""Migrations on a real SQLite file: the head schema is the models' schema, and the model-mode
audit trail (0002) upgrades, downgrades and upgrades again."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from storage import model_modes
from storage.db import current_revision, downgrade, make_engine, make_sessionmaker, upgrade
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
    assert current_revision(engine) == "0002"
    downgrade(engine, "0001")
    assert "model_mode_changes" not in inspect(engine).get_table_names()
    upgrade(engine)
    with make_sessionmaker(engine).begin() as session:
        model_modes.add_mode_change(session, model_name="m", mode="silent", actor="t", reason="r")
    with make_sessionmaker(engine)() as session:
        assert [c.model_name for c in model_modes.mode_changes(session)] == ["m"]
    engine.dispose()
