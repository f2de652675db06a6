"""The user's settings row: time zone, language, push and digest preferences (and the next
digest's instant, which scheduling keeps). Created with the user (auth), changed through account,
read by every domain that writes for the user (`profile.queries`)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time

from sqlalchemy import ARRAY, CheckConstraint, ForeignKey, SmallInteger, String, Time, text
from sqlalchemy.orm import Mapped, mapped_column

from goaltrack.db import Base, UUIDPrimaryKey
from goaltrack.i18n import LOCALES

LOCALE_CHECK = "locale IN ({})".format(", ".join(f"'{locale}'" for locale in LOCALES))
QUIET_HOURS_CHECK = (
    "(quiet_hours_start IS NULL AND quiet_hours_end IS NULL)"
    " OR (quiet_hours_start IS NOT NULL AND quiet_hours_end IS NOT NULL"
    " AND quiet_hours_start <> quiet_hours_end)"
)


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
    # Quiet hours, wall-clock times in `timezone` (both set or both NULL; `end` before `start`
    # wraps midnight): pushes wait for the end (notifications.quiet).
    quiet_hours_start: Mapped[time | None] = mapped_column(Time())
    quiet_hours_end: Mapped[time | None] = mapped_column(Time())

    __table_args__ = (
        CheckConstraint(
            "notification_frequency IN ('daily', 'weekly', 'off')", name="notification_frequency"
        ),
        CheckConstraint("notification_weekday BETWEEN 0 AND 6", name="notification_weekday"),
        # What the API accepts (Locale: the catalogues' locales): a row the response model cannot
        # read must not exist. A new catalogue needs a migration for it (tests/test_i18n.py).
        CheckConstraint(LOCALE_CHECK, name="locale"),
        # What the API accepts (QuietHours): both or neither, and never an empty window.
        CheckConstraint(QUIET_HOURS_CHECK, name="quiet_hours"),
    )
