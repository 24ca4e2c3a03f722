"""delivery claims: who is sending a delivery and since when

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-03 07:30:00

With several agents on one database a delivery in ``sending`` belongs to the agent that
claimed it; another agent puts it back to ``pending`` only once the claim is older than the
stale limit (its sender died), not at its own start.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("claimed_by")
