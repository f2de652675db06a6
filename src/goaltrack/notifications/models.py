from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, text
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


class NotificationSnooze(Base):
    """A reminder the user asked to see again at `due_at`: fired once, then deleted in the same
    transaction (notifications.snoozes). One pending snooze per notification (snoozing it again
    moves the time). It keeps what the reminder is made of rather than a foreign key to the feed
    row, which retention may delete first; it goes with its goal or its user (ON DELETE CASCADE)."""

    __tablename__ = "notification_snoozes"

    notification_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    goal_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("goals.id", ondelete="CASCADE"), index=True
    )
    # The reminder's data as the original notification carried it (no foreign keys: a stage or
    # reminder deleted since does not cancel what the user asked for).
    stage_id: Mapped[uuid.UUID | None]
    reminder_id: Mapped[uuid.UUID]
    title: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime]
