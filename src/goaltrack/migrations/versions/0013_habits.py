"""habits: a goal's kind and schedule, its check-ins, and the summary its reads need

Revision ID: 5b8e2f0c7a13
Revises: c41d7e9a2b18
Create Date: 2026-12-07 06:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5b8e2f0c7a13"
down_revision: str | None = "c41d7e9a2b18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every existing goal is a plain goal: the defaults are the backfill.
    op.add_column(
        "goals", sa.Column("kind", sa.String(8), server_default=sa.text("'goal'"), nullable=False)
    )
    op.add_column("goals", sa.Column("schedule", postgresql.JSONB(), nullable=True))
    op.add_column("goals", sa.Column("habit_start", sa.Date(), nullable=True))
    for name in ("streak_run", "streak_longest"):
        op.add_column(
            "goals", sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    op.add_column("goals", sa.Column("streak_run_end", sa.Date(), nullable=True))
    op.add_column(
        "goals",
        sa.Column("checkin_mask", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("goals", sa.Column("checkin_mask_end", sa.Date(), nullable=True))
    op.create_check_constraint(op.f("ck_goals_kind"), "goals", "kind IN ('goal', 'habit')")
    op.create_check_constraint(
        op.f("ck_goals_habit_schedule"),
        "goals",
        "(kind = 'habit') = (schedule IS NOT NULL AND habit_start IS NOT NULL)",
    )
    op.create_index(
        "ix_goals_user_id_habits",
        "goals",
        ["user_id"],
        postgresql_where=sa.text("kind = 'habit'"),
    )
    op.create_table(
        "habit_checkins",
        sa.Column("goal_id", sa.Uuid(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("note", sa.String(500), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["goal_id"],
            ["goals.id"],
            name=op.f("fk_habit_checkins_goal_id_goals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("goal_id", "date", name=op.f("pk_habit_checkins")),
    )
    # A check-in is part of its habit's representation (GET /sync, the ETag): the change log's
    # trigger for a goal's parts (migration 0011).
    op.execute(
        "CREATE TRIGGER sync_habit_checkins AFTER INSERT OR UPDATE OR DELETE ON habit_checkins"
        " FOR EACH ROW EXECUTE FUNCTION sync_goal_part()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER sync_habit_checkins ON habit_checkins")
    op.drop_table("habit_checkins")
    op.drop_index("ix_goals_user_id_habits", table_name="goals")
    op.drop_constraint(op.f("ck_goals_habit_schedule"), "goals", type_="check")
    op.drop_constraint(op.f("ck_goals_kind"), "goals", type_="check")
    for name in (
        "checkin_mask_end",
        "checkin_mask",
        "streak_run_end",
        "streak_longest",
        "streak_run",
        "habit_start",
        "schedule",
        "kind",
    ):
        op.drop_column("goals", name)
