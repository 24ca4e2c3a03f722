"""model deployment modes: the append-only audit trail of live/silent switches

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 18:20:00

Like job_events, model_mode_changes is append-only: triggers refuse UPDATE and DELETE.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_APPEND_ONLY = {
    "sqlite": [
        "CREATE TRIGGER model_mode_changes_no_update BEFORE UPDATE ON model_mode_changes "
        "BEGIN SELECT RAISE(ABORT, 'model_mode_changes is append-only'); END",
        "CREATE TRIGGER model_mode_changes_no_delete BEFORE DELETE ON model_mode_changes "
        "BEGIN SELECT RAISE(ABORT, 'model_mode_changes is append-only'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION model_mode_changes_append_only() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION 'model_mode_changes is append-only'; END; $$ LANGUAGE plpgsql",
        "CREATE TRIGGER model_mode_changes_append_only BEFORE UPDATE OR DELETE ON "
        "model_mode_changes FOR EACH ROW EXECUTE FUNCTION model_mode_changes_append_only()",
    ],
}


def upgrade() -> None:
    op.create_table(
        "model_mode_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("model_mode_changes", schema=None) as batch_op:
        batch_op.create_index("ix_model_mode_changes_name_id", ["model_name", "id"], unique=False)
    for statement in _APPEND_ONLY.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS model_mode_changes_no_update")
        op.execute("DROP TRIGGER IF EXISTS model_mode_changes_no_delete")
    elif op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS model_mode_changes_append_only ON model_mode_changes")
        op.execute("DROP FUNCTION IF EXISTS model_mode_changes_append_only()")
    with op.batch_alter_table("model_mode_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_model_mode_changes_name_id")
    op.drop_table("model_mode_changes")
