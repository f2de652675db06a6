from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from goaltrack.db import Base, CreatedAt, UUIDPrimaryKey


class Goal(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "goals"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    deadline: Mapped[date | None]
    # Derived from the stages, kept in the row (recomputed in the same transaction as every stage
    # change) so that lists need no per-goal count.
    progress: Mapped[int] = mapped_column(SmallInteger, default=0, server_default=text("0"))
    stage_count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    completed_stage_count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    is_archived: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    completed_at: Mapped[datetime | None]
    # The first time it reached 100 % (kept when it is reopened).
    first_completed_at: Mapped[datetime | None]
    ai_status: Mapped[str] = mapped_column(
        String(16), default="idle", server_default=text("'idle'")
    )
    ai_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    # Habits (goals.habits): the schedule, the local date it began, and the Summary of its
    # check-ins that every check-in and undo rewrites, so that a read needs no check-in row.
    kind: Mapped[str] = mapped_column(String(8), default="goal", server_default=text("'goal'"))
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    habit_start: Mapped[date | None]
    streak_run: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    streak_run_end: Mapped[date | None]
    streak_longest: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    checkin_mask: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    checkin_mask_end: Mapped[date | None]

    __table_args__ = (
        CheckConstraint("progress BETWEEN 0 AND 100", name="progress"),
        CheckConstraint("kind IN ('goal', 'habit')", name="kind"),
        CheckConstraint(
            "(kind = 'habit') = (schedule IS NOT NULL AND habit_start IS NOT NULL)",
            name="habit_schedule",
        ),
        CheckConstraint("ai_status IN ('idle', 'pending', 'done', 'failed')", name="ai_status"),
        # Whether a user has habits (the lists' ETag): EXISTS ... WHERE user_id = ? AND habit
        Index("ix_goals_user_id_habits", "user_id", postgresql_where=text("kind = 'habit'")),
        # GET /goals and /goals/archived: WHERE user_id = ? AND is_archived = ?
        #   AND (created_at, id) < (cursor) ORDER BY created_at DESC, id DESC LIMIT n
        Index(
            "ix_goals_user_id_is_archived_created_at_id",
            "user_id",
            "is_archived",
            text("created_at DESC"),
            text("id DESC"),
        ),
    )


class GoalStage(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "goal_stages"

    goal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("goals.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    position: Mapped[int]
    is_completed: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    completed_at: Mapped[datetime | None]
    first_completed_at: Mapped[datetime | None]  # kept when it is reopened

    __table_args__ = (
        # Deferred, so a reorder can swap positions inside one transaction. It also serves
        # the goal's stage list: WHERE goal_id = ? ORDER BY position.
        UniqueConstraint(
            "goal_id",
            "position",
            deferrable=True,
            initially="DEFERRED",
            name="uq_goal_stages_goal_id_position",
        ),
        CheckConstraint("position >= 0", name="position"),
    )


class GoalAttachment(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "goal_attachments"

    goal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("goals.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    object_key: Mapped[str] = mapped_column(String(255), unique=True)
    # The object's location (s3://bucket/key), kept from the product owner's schema; clients get
    # a short-lived presigned URL instead.
    file_url: Mapped[str] = mapped_column(String(1024))
    file_type: Mapped[str] = mapped_column(String(64))
    file_name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        # A goal's attachments: WHERE goal_id = ? ORDER BY created_at, id
        Index("ix_goal_attachments_goal_id_created_at", "goal_id", "created_at"),
    )


class GoalReminder(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "goal_reminders"

    goal_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("goals.id", ondelete="CASCADE"), index=True
    )
    remind_time: Mapped[time]
    # Its rhythm, one of the two: every 1-3 days, or on these weekdays (0 = Monday, sorted).
    frequency_days: Mapped[int | None] = mapped_column(SmallInteger)
    weekdays: Mapped[list[int] | None] = mapped_column(ARRAY(SmallInteger))
    # A habit's reminder: sent only while the occurrence's day is not done yet (decided when it
    # fires). A habit's reminder fires on its due days only, whatever this says.
    only_if_not_done: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    # The local date the every-N-days cycle counts from: the day it was created, or the day its
    # frequency last changed.
    anchor_date: Mapped[date]
    # The next occurrence in UTC; NULL when none is due (goal completed, archived, past deadline).
    next_fire_at: Mapped[datetime | None]
    # The local date that occurrence belongs to (a DST gap may push its instant past midnight).
    next_fire_date: Mapped[date | None]
    # The local date of the last occurrence served (sent or skipped): never served twice.
    last_sent_date: Mapped[date | None]

    __table_args__ = (
        CheckConstraint("frequency_days BETWEEN 1 AND 3", name="frequency_days"),
        CheckConstraint("(frequency_days IS NULL) <> (weekdays IS NULL)", name="one_rhythm"),
        CheckConstraint(
            "weekdays IS NULL OR (cardinality(weekdays) BETWEEN 1 AND 7 "
            "AND weekdays <@ ARRAY[0, 1, 2, 3, 4, 5, 6]::smallint[])",
            name="weekdays",
        ),
        # The scheduler: WHERE next_fire_at <= now() ... FOR UPDATE SKIP LOCKED
        Index(
            "ix_goal_reminders_next_fire_at",
            "next_fire_at",
            postgresql_where=text("next_fire_at IS NOT NULL"),
        ),
    )


class HabitCheckin(Base):
    """One check-in of a habit: its local date (the user's, when it was made; never rewritten)."""

    __tablename__ = "habit_checkins"

    goal_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("goals.id", ondelete="CASCADE"), primary_key=True
    )
    # The calendar: WHERE goal_id = ? AND date BETWEEN ? AND ? (the primary key).
    date: Mapped[date] = mapped_column(primary_key=True)
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class UserUsage(Base):
    """What a user holds, for the quotas: kept by PostgreSQL triggers (migration 0020) on every
    insert and delete of a goal or attachment, whatever the write path (a cascade too), so that
    a quota check reads one row instead of counting the user's goals or summing their files."""

    __tablename__ = "user_usage"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    goals: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
