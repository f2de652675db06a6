"""The notification feed's rows, and `notify`: every event writes its row and makes its push
durable in the caller's transaction (an outbox row; the push task runs after the commit, or, in the
user's quiet hours, when they end)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.errors import NotFound
from goaltrack.notifications.kinds import NotificationData
from goaltrack.notifications.models import Notification
from goaltrack.notifications.quiet import QuietHours, quiet_until
from goaltrack.profile.models import UserSettings
from goaltrack.worker.outbox import defer_durably

PUSH = "notifications.push"
RETENTION_BATCH = 5000


async def notify(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    data: NotificationData,
    title: str,
    body: str,
    now: datetime,
    notification_id: uuid.UUID | None = None,
) -> Notification:
    notification = Notification(
        id=notification_id or uuid.uuid4(),
        user_id=user_id,
        type=data.type,
        title=title[:255],
        body=body,
        data=data.model_dump(mode="json"),
        created_at=now,
    )
    session.add(notification)
    # Whether to push (push enabled, devices, account state) is decided when the task runs; in
    # quiet hours the task is not even sent before they end.
    defer_durably(
        session,
        PUSH,
        str(notification.id),
        now=now,
        user_id=user_id,
        hold_until=await quiet_hours_end(session, user_id, now),
    )
    await session.flush()
    return notification


async def quiet_hours_end(
    session: AsyncSession, user_id: uuid.UUID, now: datetime
) -> datetime | None:
    """When the user's quiet hours holding `now` end (None: not in quiet hours)."""
    row = (
        await session.execute(
            select(
                UserSettings.timezone, UserSettings.quiet_hours_start, UserSettings.quiet_hours_end
            ).where(UserSettings.user_id == user_id)
        )
    ).one_or_none()
    if row is None:
        return None
    zone, start, end = row
    return quiet_until(QuietHours.of(start, end), ZoneInfo(zone), now)


async def mark_read(
    session: AsyncSession, *, user_id: uuid.UUID, notification_id: uuid.UUID
) -> Notification:
    notification: Notification | None = await session.scalar(
        update(Notification)
        .where(Notification.id == notification_id, Notification.user_id == user_id)
        .values(is_read=True)
        .returning(Notification)
    )
    if notification is None:
        raise NotFound
    return notification


async def mark_all_read(session: AsyncSession, *, user_id: uuid.UUID) -> int:
    """One UPDATE over the unread partial index."""
    result = await session.execute(
        update(Notification)
        .where(Notification.user_id == user_id, Notification.is_read.is_(False))
        .values(is_read=True)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def delete_expired(session: AsyncSession, *, now: datetime, retention: timedelta) -> int:
    """One batch of notifications older than the retention period."""
    cutoff = now - retention
    batch = (
        select(Notification.id)
        .where(Notification.created_at < cutoff)
        .limit(RETENTION_BATCH)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = await session.execute(delete(Notification).where(Notification.id.in_(batch)))
    return int(result.rowcount)  # type: ignore[attr-defined]
