from __future__ import annotations

import uuid
from datetime import date, datetime, time

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from goaltrack.db import Base, UUIDPrimaryKey


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
        # Retention of the ledger (scheduling.delete_expired_deliveries), as long as the feed's.
        Index("ix_reminder_deliveries_sent_at", "sent_at"),
    )
