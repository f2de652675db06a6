"""The change log's retention."""

from __future__ import annotations

from datetime import timedelta

from goaltrack.clock import utcnow
from goaltrack.sync import service
from goaltrack.worker.registry import task
from goaltrack.worker.runtime import in_batches, task_settings


@task("sync.delete_expired_tombstones", every=timedelta(hours=1))
async def delete_expired_tombstones() -> int:
    """Tombstones go SYNC_TOMBSTONE_DAYS (and a day of slack) after the deletion, a batch per
    transaction; a cursor that old is answered 410 and its client starts again."""
    keep = timedelta(days=task_settings().sync_tombstone_days) + service.RETENTION_SLACK
    return await in_batches(
        service.RETENTION_BATCH,
        lambda session: service.delete_expired_tombstones(session, now=utcnow(), keep=keep),
    )
