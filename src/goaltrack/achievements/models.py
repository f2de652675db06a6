from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, SmallInteger, String, text
from sqlalchemy.orm import Mapped, mapped_column

from goaltrack.db import Base, UUIDPrimaryKey


class Achievement(UUIDPrimaryKey, Base):
    """The catalogue, seeded by migrations. `condition` names a metric in `conditions.METRICS`;
    the achievement is earned when that metric reaches `threshold`. Its title and description
    are in the message catalogues, by `code` (`achievements.texts`)."""

    __tablename__ = "achievements"

    code: Mapped[str] = mapped_column(String(64), unique=True)
    position: Mapped[int] = mapped_column(SmallInteger)
    icon: Mapped[str] = mapped_column(String(64))
    condition: Mapped[str] = mapped_column(String(64))
    threshold: Mapped[int] = mapped_column(default=1, server_default=text("1"))


class UserAchievement(Base):
    """Earned once, never revoked."""

    __tablename__ = "user_achievements"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    achievement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("achievements.id", ondelete="CASCADE"), primary_key=True
    )
    earned_at: Mapped[datetime]

    __table_args__ = (
        # Holders of one achievement (the daily statistics join every row with users instead:
        # a parallel hash join, 2-4 s at 10 M rows, once a day).
        Index("ix_user_achievements_achievement_id_user_id", "achievement_id", "user_id"),
    )


class UserStats(Base):
    """Per-user counters, kept by the achievement handlers in the transaction of each event, so a
    condition never scans the user's history."""

    __tablename__ = "user_stats"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    goals_created: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    stages_completed: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    goals_completed: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    goals_completed_before_deadline: Mapped[int] = mapped_column(
        default=0, server_default=text("0")
    )
    attachments_added: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    ai_plans_applied: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    habit_checkins: Mapped[int] = mapped_column(default=0, server_default=text("0"))
