"""quiet hours and snoozed reminders: the settings' window, held outbox rows, pending snoozes

Revision ID: b2e4d6f8a0c1
Revises: a1f0c3d5e7b9
Create Date: 2026-12-07 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b2e4d6f8a0c1"
down_revision: str | None = "a1f0c3d5e7b9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Settings' visible columns (migration 0011): an update of any of them is a change (GET /sync,
# the settings' ETag); the next digest's bookkeeping is none.
SETTINGS_SHOWN = (
    "push_enabled",
    "notification_frequency",
    "notification_times",
    "notification_weekday",
    "timezone",
    "locale",
)
QUIET_HOURS = ("quiet_hours_start", "quiet_hours_end")


def _settings_trigger(columns: Sequence[str]) -> str:
    old = ", ".join(f"OLD.{column}" for column in columns)
    new = ", ".join(f"NEW.{column}" for column in columns)
    return (
        "CREATE TRIGGER sync_user_settings_update AFTER UPDATE ON user_settings"
        f" FOR EACH ROW WHEN (({old}) IS DISTINCT FROM ({new}))"
        " EXECUTE FUNCTION sync_settings()"
    )


def upgrade() -> None:
    for column in QUIET_HOURS:
        op.add_column("user_settings", sa.Column(column, sa.Time(), nullable=True))
    op.create_check_constraint(
        op.f("ck_user_settings_quiet_hours"),
        "user_settings",
        "(quiet_hours_start IS NULL AND quiet_hours_end IS NULL)"
        " OR (quiet_hours_start IS NOT NULL AND quiet_hours_end IS NOT NULL"
        " AND quiet_hours_start <> quiet_hours_end)",
    )
    op.execute("DROP TRIGGER sync_user_settings_update ON user_settings")
    op.execute(_settings_trigger(SETTINGS_SHOWN + QUIET_HOURS))

    # A durable task waiting on purpose (a push in quiet hours): its send is not a resend.
    op.add_column(
        "task_outbox",
        sa.Column("held", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )

    op.create_table(
        "notification_snoozes",
        sa.Column("notification_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("goal_id", sa.Uuid(), nullable=False),
        sa.Column("stage_id", sa.Uuid(), nullable=True),
        sa.Column("reminder_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notification_snoozes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["goal_id"],
            ["goals.id"],
            name=op.f("fk_notification_snoozes_goal_id_goals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("notification_id", name=op.f("pk_notification_snoozes")),
    )
    # The tick's claim: WHERE due_at <= now ORDER BY due_at ... SKIP LOCKED
    op.create_index("ix_notification_snoozes_due_at", "notification_snoozes", ["due_at"])
    # A user's or a goal's deletion cascades here.
    op.create_index("ix_notification_snoozes_user_id", "notification_snoozes", ["user_id"])
    op.create_index("ix_notification_snoozes_goal_id", "notification_snoozes", ["goal_id"])


def downgrade() -> None:
    op.drop_table("notification_snoozes")
    op.drop_column("task_outbox", "held")
    op.execute("DROP TRIGGER sync_user_settings_update ON user_settings")
    op.execute(_settings_trigger(SETTINGS_SHOWN))
    op.drop_constraint(op.f("ck_user_settings_quiet_hours"), "user_settings", type_="check")
    for column in QUIET_HOURS:
        op.drop_column("user_settings", column)
