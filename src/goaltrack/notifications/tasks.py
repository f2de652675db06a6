"""Push delivery (FCM), snoozed reminders coming again, and the feed's retention."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.auth.models import User
from goaltrack.clock import utcnow
from goaltrack.config import Settings
from goaltrack.devices.models import Device
from goaltrack.notifications import service, snoozes
from goaltrack.notifications.kinds import ReminderData
from goaltrack.notifications.models import Notification, PushDelivery
from goaltrack.notifications.quiet import QuietHours, quiet_until
from goaltrack.observability.metrics import PUSH_RESULTS
from goaltrack.profile.models import UserSettings
from goaltrack.push import FcmSender, PushMessage, PushOutcome, PushResult, retry_delay
from goaltrack.worker.registry import TICK, Hold, RetryLater, task
from goaltrack.worker.runtime import current_attempt, in_batches, task_session, task_settings

logger = logging.getLogger(__name__)

# Backoff 10 s doubling to 15 min, each wait drawn from the upper half of its step: 14 retries
# span 63-126 min (about 1 h 35 min) of FCM trouble.
PUSH_RETRIES = 14
RETRY_CAP_SECONDS = 900
SENDING = "sending"
# Every outcome is exposed from the start (0): the dashboard's push panel has data on a fresh stack.
for _outcome in PushOutcome:
    PUSH_RESULTS.labels(_outcome.value)


class _Senders(threading.local):
    sender: FcmSender | None = None
    settings: Settings | None = None


_senders = _Senders()


def _sender(settings: Settings) -> FcmSender | None:
    """The worker thread's FCM client (its HTTP pool belongs to the thread's event loop)."""
    if settings.fcm_credentials_file is None:
        return None
    if _senders.settings is not settings:
        _senders.sender = FcmSender(
            credentials_file=settings.fcm_credentials_file,
            project_id=settings.fcm_project_id,
            base_url=settings.fcm_base_url,
        )
        _senders.settings = settings
    return _senders.sender


@task(service.PUSH, durable=True, max_retries=PUSH_RETRIES)
async def push(notification_id: str) -> None:
    """Push one notification to every device of its user, each device at most once."""
    sender = _sender(task_settings())
    if sender is None:
        return  # push is off (no FCM credentials): the feed row is all there is
    now = utcnow()
    async with task_session() as session:
        claimed = await _claim_devices(session, uuid.UUID(notification_id), now)
    if claimed is None:
        return
    notification, devices = claimed
    results = [(device, await sender.send(_message(notification, device))) for device in devices]
    async with task_session() as session:
        await _record_results(session, notification.id, results)
    retryable = [result for _, result in results if result.retryable]
    if retryable:
        raise RetryLater(_retry_delay(retryable), f"{len(retryable)} devices to retry")


async def _claim_devices(
    session: AsyncSession, notification_id: uuid.UUID, now: datetime
) -> tuple[Notification, list[Device]] | None:
    """The notification and the devices it still has to reach, claimed in this transaction (a
    re-delivered task skips them). None when nothing is to be pushed; `Hold` in the user's quiet
    hours (a push queued just before them, a retry that lands in them), before anything is
    claimed: the outbox sends the task again at their end."""
    row = (
        await session.execute(
            select(
                Notification,
                UserSettings.push_enabled,
                User.deleted_at,
                UserSettings.timezone,
                UserSettings.quiet_hours_start,
                UserSettings.quiet_hours_end,
            )
            .join(User, User.id == Notification.user_id)
            .join(UserSettings, UserSettings.user_id == Notification.user_id)
            .where(Notification.id == notification_id)
        )
    ).one_or_none()
    if row is None:
        return None
    notification, push_enabled, deleted_at, zone, quiet_start, quiet_end = row
    if not push_enabled or deleted_at is not None:
        return None
    if until := quiet_until(QuietHours.of(quiet_start, quiet_end), ZoneInfo(zone), now):
        raise Hold(until, f"quiet hours until {until.isoformat()}")
    devices = list(
        await session.scalars(
            select(Device)
            # A logout deleting a device waits for this claim (no foreign-key error mid-claim).
            .with_for_update(key_share=True)
            .where(
                Device.user_id == notification.user_id,
                ~select(PushDelivery)
                .where(
                    PushDelivery.notification_id == notification_id,
                    PushDelivery.device_id == Device.id,
                )
                .exists(),
            )
        )
    )
    if not devices:
        return None
    claimed = await session.scalars(
        insert(PushDelivery)
        .values(
            [
                {
                    "notification_id": notification_id,
                    "device_id": device.id,
                    "outcome": SENDING,
                    "created_at": now,
                }
                for device in devices
            ]
        )
        .on_conflict_do_nothing()
        .returning(PushDelivery.device_id)
    )
    mine = set(claimed)
    return notification, [device for device in devices if device.id in mine]


async def _record_results(
    session: AsyncSession,
    notification_id: uuid.UUID,
    results: list[tuple[Device, PushResult]],
) -> None:
    for device, result in results:
        PUSH_RESULTS.labels(result.outcome.value).inc()
        delivery = await session.get(PushDelivery, (notification_id, device.id))
        if result.drop_device:
            # The token is dead (UNREGISTERED) or not ours (SENDER_ID_MISMATCH): forget it.
            await session.execute(delete(Device).where(Device.id == device.id))
        elif result.retryable:
            if delivery is not None:
                await session.delete(delivery)  # unclaimed: the retry sends to it again
        elif delivery is not None:
            delivery.outcome = result.outcome.value
        if result.outcome not in (PushOutcome.SENT, PushOutcome.UNREGISTERED):
            logger.warning(
                "push of notification %s to device %s: %s (%s)",
                notification_id,
                device.id,
                result.outcome.value,
                result.detail or "",
            )


def _message(notification: Notification, device: Device) -> PushMessage:
    data = {"type": notification.type, "notification_id": str(notification.id)}
    for key in ("goal_id", "stage_id"):
        if notification.data.get(key):
            data[key] = str(notification.data[key])
    return PushMessage(
        token=device.token,
        title=notification.title,
        body=notification.body,
        data=data,
        urgent=notification.type == ReminderData.type,
    )


def _retry_delay(results: list[PushResult]) -> float:
    """The longest wait any device asks for (push.retry_delay: exponential backoff with jitter,
    capped at 15 min, never sooner than FCM's Retry-After or a minute after QUOTA_EXCEEDED)."""
    retries = current_attempt().retries
    return max(retry_delay(result, retries, cap=RETRY_CAP_SECONDS) for result in results)


@task("notifications.delete_expired", every=timedelta(hours=1))
async def delete_expired() -> int:
    """Notifications older than NOTIFICATION_RETENTION_DAYS go, a batch per transaction."""
    retention = timedelta(days=task_settings().notification_retention_days)
    return await in_batches(
        service.RETENTION_BATCH,
        lambda session: service.delete_expired(session, now=utcnow(), retention=retention),
    )


@task("notifications.fire_snoozes", every=TICK)
async def fire_snoozes() -> int:
    """Every due snooze: its reminder again, once (claimed, written and deleted in one
    transaction), a batch per transaction."""
    return await in_batches(snoozes.BATCH, lambda session: snoozes.fire_due(session, now=utcnow()))
