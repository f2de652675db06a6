"""The scheduler's tick, and the ledger's retention."""

from __future__ import annotations

from datetime import timedelta

from goaltrack.clock import utcnow
from goaltrack.scheduling import dispatcher
from goaltrack.worker.registry import TICK, task
from goaltrack.worker.runtime import in_batches, task_session, task_settings


@task("scheduling.dispatch_due", every=TICK)
async def dispatch_due() -> dict[str, int]:
    """The scheduler's tick: every due occurrence of a reminder or digest, in batches, each
    exactly once."""
    settings = task_settings()
    now = utcnow()
    lateness = timedelta(minutes=settings.reminder_max_lateness_minutes)
    totals = {"reminders": 0, "digests": 0, "late": 0}
    for dispatch, key in (
        (dispatcher.dispatch_reminders, "reminders"),
        (dispatcher.dispatch_digests, "digests"),
    ):
        while True:
            async with task_session() as session:
                served = await dispatch(session, now=now, max_lateness=lateness)
            totals[key] += served.sent
            totals["late"] += served.late
            # A short batch was the last of the due rows, unless some were left due (CATCH_UP
            # reached after an outage): they go on now, judged against the same `now`, so that
            # an occurrence inside the lateness window is not pushed out of it by a tick's wait.
            if served.claimed < dispatcher.BATCH and not served.left_due:
                break
    return totals


@task("scheduling.delete_expired_deliveries", every=timedelta(hours=1))
async def delete_expired_deliveries() -> int:
    """Ledger rows older than NOTIFICATION_RETENTION_DAYS go (the feed keeps its rows as long), a
    batch per transaction. An occurrence that old can never be due again."""
    retention = timedelta(days=task_settings().notification_retention_days)
    return await in_batches(
        dispatcher.RETENTION_BATCH,
        lambda session: dispatcher.delete_expired_deliveries(
            session, now=utcnow(), retention=retention
        ),
    )
