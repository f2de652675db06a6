"""flexible reminders: on chosen weekdays instead of every N days, and only while a habit's day
is not done

Revision ID: a1f0c3d5e7b9
Revises: 9c4d1e7b2f60
Create Date: 2026-12-07 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "a1f0c3d5e7b9"
down_revision: str | None = "9c4d1e7b2f60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What a Reminder shows, so what the sync log and the goal's ETag follow (migration 0011's
# trigger, which named only the columns of its day).
SHOWN_OLD = "OLD.goal_id, OLD.remind_time, OLD.frequency_days, OLD.next_fire_at"
SHOWN_NEW = "NEW.goal_id, NEW.remind_time, NEW.frequency_days, NEW.next_fire_at"


def _reminder_update_trigger(extra_old: str, extra_new: str) -> None:
    op.execute("DROP TRIGGER sync_goal_reminders_update ON goal_reminders")
    op.execute(
        f"""
        CREATE TRIGGER sync_goal_reminders_update AFTER UPDATE ON goal_reminders
            FOR EACH ROW WHEN (({SHOWN_OLD}{extra_old}) IS DISTINCT FROM ({SHOWN_NEW}{extra_new}))
            EXECUTE FUNCTION sync_goal_part()
        """
    )


def upgrade() -> None:
    op.alter_column("goal_reminders", "frequency_days", nullable=True)
    op.add_column(
        "goal_reminders", sa.Column("weekdays", postgresql.ARRAY(sa.SmallInteger()), nullable=True)
    )
    op.add_column(
        "goal_reminders",
        sa.Column(
            "only_if_not_done", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    # Backfill: a habit's reminder defaults to "only if not done yet".
    op.execute(
        "UPDATE goal_reminders SET only_if_not_done = true "
        "FROM goals WHERE goals.id = goal_reminders.goal_id AND goals.kind = 'habit'"
    )
    op.create_check_constraint(
        op.f("ck_goal_reminders_one_rhythm"),
        "goal_reminders",
        "(frequency_days IS NULL) <> (weekdays IS NULL)",
    )
    op.create_check_constraint(
        op.f("ck_goal_reminders_weekdays"),
        "goal_reminders",
        "weekdays IS NULL OR (cardinality(weekdays) BETWEEN 1 AND 7 "
        "AND weekdays <@ ARRAY[0, 1, 2, 3, 4, 5, 6]::smallint[])",
    )
    _reminder_update_trigger(
        ", OLD.weekdays, OLD.only_if_not_done", ", NEW.weekdays, NEW.only_if_not_done"
    )


def downgrade() -> None:
    _reminder_update_trigger("", "")
    op.drop_constraint(op.f("ck_goal_reminders_weekdays"), "goal_reminders", type_="check")
    op.drop_constraint(op.f("ck_goal_reminders_one_rhythm"), "goal_reminders", type_="check")
    op.execute("UPDATE goal_reminders SET frequency_days = 1 WHERE frequency_days IS NULL")
    op.drop_column("goal_reminders", "only_if_not_done")
    op.drop_column("goal_reminders", "weekdays")
    op.alter_column("goal_reminders", "frequency_days", nullable=False)
