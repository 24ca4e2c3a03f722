"""named API tokens with roles, and the append-only radiologist feedback

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 07:30:00

Like job_events, feedback is append-only: triggers refuse UPDATE and DELETE.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_APPEND_ONLY = {
    "sqlite": [
        "CREATE TRIGGER feedback_no_update BEFORE UPDATE ON feedback "
        "BEGIN SELECT RAISE(ABORT, 'feedback is append-only'); END",
        "CREATE TRIGGER feedback_no_delete BEFORE DELETE ON feedback "
        "BEGIN SELECT RAISE(ABORT, 'feedback is append-only'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION feedback_append_only() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION 'feedback is append-only'; END; $$ LANGUAGE plpgsql",
        "CREATE TRIGGER feedback_append_only BEFORE UPDATE OR DELETE ON "
        "feedback FOR EACH ROW EXECUTE FUNCTION feedback_append_only()",
    ],
}


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_sha256"),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("agree", sa.Boolean(), nullable=False),
        sa.Column("reference_positive", sa.Boolean(), nullable=False),
        sa.Column("wrong_slice", sa.Boolean(), nullable=False),
        sa.Column("wrong_outline", sa.Boolean(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.create_index("ix_feedback_job_id_id", ["job_id", "id"], unique=False)
    for statement in _APPEND_ONLY.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS feedback_no_update")
        op.execute("DROP TRIGGER IF EXISTS feedback_no_delete")
    elif op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS feedback_append_only ON feedback")
        op.execute("DROP FUNCTION IF EXISTS feedback_append_only()")
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_feedback_job_id_id")
    op.drop_table("feedback")
    op.drop_table("api_tokens")
