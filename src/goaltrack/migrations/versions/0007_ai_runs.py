"""ai runs: the "split into stages with AI" requests

Revision ID: 9b3f6a20c1d7
Revises: 7c2e4b91d0a6
Create Date: 2026-12-01 04:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9b3f6a20c1d7"
down_revision: str | None = "7c2e4b91d0a6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ai_runs",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("goal_id", sa.Uuid(), nullable=False),
        sa.Column("max_stages", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'failed')", name=op.f("ck_ai_runs_status")
        ),
        sa.ForeignKeyConstraint(
            ["goal_id"], ["goals.id"], name=op.f("fk_ai_runs_goal_id_goals"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_ai_runs_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_runs")),
    )
    # A goal's runs (and the cascade from goals).
    op.create_index(op.f("ix_ai_runs_goal_id"), "ai_runs", ["goal_id"], unique=False)
    # The daily quota: WHERE user_id = ? AND created_at > now() - 1 day.
    op.create_index("ix_ai_runs_user_id_created_at", "ai_runs", ["user_id", "created_at"])
    # The stale-run sweep: pending runs past their deadline.
    op.create_index(
        "ix_ai_runs_pending_created_at",
        "ai_runs",
        ["created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    # Existing goals: a run that can no longer finish is failed, never pending for ever.
    op.execute(
        "UPDATE goals SET ai_status = 'failed', ai_error = 'interrupted' WHERE ai_status = 'pending'"
    )


def downgrade() -> None:
    op.drop_table("ai_runs")
