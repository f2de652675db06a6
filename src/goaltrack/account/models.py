from __future__ import annotations

import uuid
from datetime import date, datetime, time

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    Time,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from goaltrack.db import Base, CreatedAt, UUIDPrimaryKey


class UserSettings(UUIDPrimaryKey, Base):
    __tablename__ = "user_settings"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    push_enabled: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    notification_frequency: Mapped[str] = mapped_column(
        String(16), default="off", server_default=text("'off'")
    )
    # Wall-clock times in `timezone`, stored sorted.
    notification_times: Mapped[list[time]] = mapped_column(
        ARRAY(Time()), default=list, server_default=text("'{}'")
    )
    notification_weekday: Mapped[int] = mapped_column(
        SmallInteger, default=0, server_default=text("0")
    )
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default=text("'UTC'"))
    locale: Mapped[str] = mapped_column(String(8), default="en", server_default=text("'en'"))
    # The next digest instant (UTC), recomputed with the times, frequency and zone.
    next_digest_at: Mapped[datetime | None] = mapped_column(index=True)
    # The local date and wall time that digest belongs to (the ledger's key).
    next_digest_date: Mapped[date | None]
    next_digest_time: Mapped[time | None] = mapped_column(Time())

    __table_args__ = (
        CheckConstraint(
            "notification_frequency IN ('daily', 'weekly', 'off')", name="notification_frequency"
        ),
        CheckConstraint("notification_weekday BETWEEN 0 AND 6", name="notification_weekday"),
        # What the API accepts (Locale): a row the response model cannot read must not exist.
        CheckConstraint("locale IN ('en', 'ru')", name="locale"),
    )


class DataExport(UUIDPrimaryKey, CreatedAt, Base):
    """A GDPR export: a ZIP of everything the user owns, kept in S3 for a week."""

    __tablename__ = "data_exports"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(
        String(16), default="pending", server_default=text("'pending'")
    )
    object_key: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'ready', 'failed')", name="status"),
        # One export at a time: a second pending row for the user violates this.
        Index(
            "uq_data_exports_user_id_pending",
            "user_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
        ),
        # The expiry job: WHERE expires_at <= now()
        Index(
            "ix_data_exports_expires_at",
            "expires_at",
            postgresql_where=text("expires_at IS NOT NULL"),
        ),
    )
