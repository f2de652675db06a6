from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from goaltrack.db import Base, CreatedAt, UUIDPrimaryKey


class Notification(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "notifications"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'"))
    is_read: Mapped[bool] = mapped_column(default=False, server_default=text("false"))

    __table_args__ = (
        # The feed: WHERE user_id = ? AND (created_at, id) < cursor ORDER BY created_at DESC, id DESC
        Index(
            "ix_notifications_user_id_created_at_id",
            "user_id",
            text("created_at DESC"),
            text("id DESC"),
        ),
        # unread_count: WHERE user_id = ? AND NOT is_read
        Index("ix_notifications_user_id_unread", "user_id", postgresql_where=text("NOT is_read")),
        # Retention: WHERE created_at < ? (a batch at a time)
        Index("ix_notifications_created_at", "created_at"),
    )


class PushDelivery(Base):
    """One push of one notification to one device, claimed before the send: a re-delivered task
    never pushes twice to the same device."""

    __tablename__ = "push_deliveries"

    notification_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    # 'sending' until FCM answered; then 'sent' or the error code that ends it for this device.
    outcome: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]


class ScheduledDelivery(UUIDPrimaryKey, Base):
    """One send of a reminder or digest occurrence, keyed by the user's *local* date (and, for a
    digest, local time): whatever restarts, second beats or zone changes happen, one occurrence
    is sent once."""

    __tablename__ = "reminder_deliveries"

    kind: Mapped[str] = mapped_column(String(16))
    reminder_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("goal_reminders.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    local_date: Mapped[date]
    local_time: Mapped[time]
    scheduled_for: Mapped[datetime]
    # NULL: skipped (found too late); the row still marks the occurrence as served. Not a
    # foreign key: the ledger row is written first, and outlives the notification's retention.
    notification_id: Mapped[uuid.UUID | None]
    sent_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint("kind IN ('reminder', 'digest')", name="kind"),
        Index(
            "uq_reminder_deliveries_reminder_id_local_date",
            "reminder_id",
            "local_date",
            unique=True,
            postgresql_where=text("kind = 'reminder'"),
        ),
        Index(
            "uq_reminder_deliveries_user_id_local_date_local_time",
            "user_id",
            "local_date",
            "local_time",
            unique=True,
            postgresql_where=text("kind = 'digest'"),
        ),
        # Retention of the ledger, with the notifications.
        Index("ix_reminder_deliveries_sent_at", "sent_at"),
    )
