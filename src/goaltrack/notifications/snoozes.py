"""Snoozed reminders: `POST /notifications/{notification_id}/snooze` records when a reminder comes
again; every scheduler tick claims the due ones and writes each again through `notify` (a new feed
row and its push, which waits out quiet hours).

Exactly once: a claim locks its rows (FOR UPDATE SKIP LOCKED: a second beat or worker takes
others), writes the notifications and deletes the snoozes in one transaction; a restart before the
commit leaves them due, after it leaves nothing. A tick costs what the due snoozes cost
(ix_notification_snoozes_due_at), whatever the number of users or pending snoozes.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.errors import NotFound
from goaltrack.goals.models import Goal
from goaltrack.goals.queries import HABIT, habit_today
from goaltrack.notifications.errors import NotSnoozable
from goaltrack.notifications.kinds import ReminderData
from goaltrack.notifications.models import Notification, NotificationSnooze
from goaltrack.notifications.service import notify
from goaltrack.profile.models import UserSettings
from goaltrack.profile.queries import local_date

BATCH = 500


async def snooze(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    notification_id: uuid.UUID,
    minutes: int,
    now: datetime,
) -> datetime:
    """The caller's reminder comes again `minutes` from now; a snooze of it still pending is
    moved there. When it comes again."""
    notification = await session.scalar(
        select(Notification).where(
            Notification.id == notification_id, Notification.user_id == user_id
        )
    )
    if notification is None:
        raise NotFound
    if notification.type != ReminderData.type:
        raise NotSnoozable("Only a reminder can be snoozed.")
    try:
        data = ReminderData.model_validate(notification.data)
    except ValidationError as exc:
        raise NotSnoozable("This reminder no longer names its goal.") from exc
    # KEY SHARE: the goal cannot be deleted before the snooze that references it is committed.
    goal = await session.scalar(
        select(Goal.id)
        .where(
            Goal.id == data.goal_id,
            Goal.user_id == user_id,
            Goal.is_archived.is_(False),
            Goal.completed_at.is_(None),
        )
        .with_for_update(key_share=True)
    )
    if goal is None:
        raise NotSnoozable("The reminder's goal is completed, archived or deleted.")
    due_at = now + timedelta(minutes=minutes)
    pending = insert(NotificationSnooze).values(
        notification_id=notification.id,
        user_id=user_id,
        goal_id=data.goal_id,
        stage_id=data.stage_id,
        reminder_id=data.reminder_id,
        title=notification.title,
        body=notification.body,
        due_at=due_at,
        created_at=now,
    )
    await session.execute(
        pending.on_conflict_do_update(
            index_elements=[NotificationSnooze.notification_id],
            set_={"due_at": pending.excluded.due_at, "created_at": pending.excluded.created_at},
        )
    )
    return due_at


async def fire_due(session: AsyncSession, *, now: datetime, batch: int = BATCH) -> int:
    """One batch of due snoozes, claimed: each reminder written again, and the snoozes deleted.
    A goal completed or archived since, or a habit already done on the user's date, takes none.
    How many were claimed."""
    due = (
        await session.execute(
            select(
                NotificationSnooze,
                Goal.is_archived,
                Goal.completed_at,
                HABIT,
                UserSettings.timezone,
            )
            .join(Goal, Goal.id == NotificationSnooze.goal_id)
            .join(UserSettings, UserSettings.user_id == NotificationSnooze.user_id)
            .where(NotificationSnooze.due_at <= now)
            .order_by(NotificationSnooze.due_at)
            .limit(batch)
            .with_for_update(of=NotificationSnooze, skip_locked=True)
        )
    ).all()
    if not due:
        return 0
    await session.execute(
        delete(NotificationSnooze).where(
            NotificationSnooze.notification_id.in_([row[0].notification_id for row in due])
        )
    )
    for snoozed, is_archived, completed_at, habit, zone in due:
        if is_archived or completed_at is not None:
            continue
        today = habit_today(habit, local_date(zone, now))
        if today is not None and today.done_today:
            continue  # a habit's reminder comes only while the day is not done yet
        await notify(
            session,
            user_id=snoozed.user_id,
            data=ReminderData(
                goal_id=snoozed.goal_id,
                stage_id=snoozed.stage_id,
                reminder_id=snoozed.reminder_id,
            ),
            title=snoozed.title,
            body=snoozed.body,
            now=now,
        )
    return len(due)
