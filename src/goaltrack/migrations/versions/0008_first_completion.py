"""first completion of goals and stages (achievements count each once)

Revision ID: 2d8e5f7a4c19
Revises: 9b3f6a20c1d7
Create Date: 2026-12-01 05:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2d8e5f7a4c19"
down_revision: str | None = "9b3f6a20c1d7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("goals", "goal_stages"):
        op.add_column(
            table, sa.Column("first_completed_at", sa.DateTime(timezone=True), nullable=True)
        )
        # What is completed now was first completed no later than its completion time.
        op.execute(
            f"UPDATE {table} SET first_completed_at = completed_at WHERE completed_at IS NOT NULL"
        )


def downgrade() -> None:
    for table in ("goal_stages", "goals"):
        op.drop_column(table, "first_completed_at")
