"""notifications delivery: task outbox, push deliveries, the scheduler's ledger

Revision ID: 5a1d0c3e9b42
Revises: 6777d17031cb
Create Date: 2026-12-01 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5a1d0c3e9b42"
down_revision: str | None = "6777d17031cb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_outbox",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("args", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_task_outbox_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_outbox")),
    )
    # The sweep: WHERE not_before <= now() ORDER BY not_before
    op.create_index("ix_task_outbox_not_before", "task_outbox", ["not_before"])
    # A user's hard deletion cascades here.
    op.create_index("ix_task_outbox_user_id", "task_outbox", ["user_id"])

    op.create_table(
        "push_deliveries",
        sa.Column("notification_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_push_deliveries_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_push_deliveries_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("notification_id", "device_id", name=op.f("pk_push_deliveries")),
    )
    # A device's deletion cascades here.
    op.create_index(
        op.f("ix_push_deliveries_device_id"), "push_deliveries", ["device_id"], unique=False
    )

    op.create_table(
        "reminder_deliveries",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reminder_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("local_date", sa.Date(), nullable=False),
        sa.Column("local_time", sa.Time(), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notification_id", sa.Uuid(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('reminder', 'digest')", name=op.f("ck_reminder_deliveries_kind")
        ),
        sa.ForeignKeyConstraint(
            ["reminder_id"],
            ["goal_reminders.id"],
            name=op.f("fk_reminder_deliveries_reminder_id_goal_reminders"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_reminder_deliveries_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminder_deliveries")),
    )
    # One send per (reminder, local date): the scheduler's INSERT ... ON CONFLICT DO NOTHING.
    op.create_index(
        "uq_reminder_deliveries_reminder_id_local_date",
        "reminder_deliveries",
        ["reminder_id", "local_date"],
        unique=True,
        postgresql_where=sa.text("kind = 'reminder'"),
    )
    # One digest per (user, local date, local time).
    op.create_index(
        "uq_reminder_deliveries_user_id_local_date_local_time",
        "reminder_deliveries",
        ["user_id", "local_date", "local_time"],
        unique=True,
        postgresql_where=sa.text("kind = 'digest'"),
    )
    # Retention: WHERE sent_at < cutoff.
    op.create_index("ix_reminder_deliveries_sent_at", "reminder_deliveries", ["sent_at"])
    op.create_index(
        op.f("ix_reminder_deliveries_user_id"), "reminder_deliveries", ["user_id"], unique=False
    )
    # Retention of the feed: WHERE created_at < cutoff.
    op.create_index("ix_notifications_created_at", "notifications", ["created_at"])

    op.add_column("goal_reminders", sa.Column("next_fire_date", sa.Date(), nullable=True))
    op.add_column("goal_reminders", sa.Column("last_sent_date", sa.Date(), nullable=True))
    op.add_column("user_settings", sa.Column("next_digest_date", sa.Date(), nullable=True))
    op.add_column("user_settings", sa.Column("next_digest_time", sa.Time(), nullable=True))
    # Existing schedules: the local date (and time) of their next instant.
    op.execute(
        """
        UPDATE goal_reminders AS r
        SET next_fire_date = (r.next_fire_at AT TIME ZONE s.timezone)::date
        FROM goals AS g JOIN user_settings AS s ON s.user_id = g.user_id
        WHERE g.id = r.goal_id AND r.next_fire_at IS NOT NULL
        """
    )
    op.execute(
        """
        UPDATE user_settings
        SET next_digest_date = (next_digest_at AT TIME ZONE timezone)::date,
            next_digest_time = (next_digest_at AT TIME ZONE timezone)::time
        WHERE next_digest_at IS NOT NULL
        """
    )


def downgrade() -> None:
    op.drop_column("user_settings", "next_digest_time")
    op.drop_column("user_settings", "next_digest_date")
    op.drop_column("goal_reminders", "last_sent_date")
    op.drop_column("goal_reminders", "next_fire_date")
    op.drop_index("ix_notifications_created_at", table_name="notifications")
    op.drop_table("reminder_deliveries")
    op.drop_table("push_deliveries")
    op.drop_table("task_outbox")
