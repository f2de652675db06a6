"""The file-deletion outbox: S3 objects are deleted after the database forgets them, never before,
and retried until S3 confirms."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.defer import defer
from goaltrack.files.models import FileDeletion
from goaltrack.storage import Storage, StorageUnavailable
from goaltrack.worker.registry import backoff

logger = logging.getLogger(__name__)

PROCESS_FILE_DELETIONS = "files.process_file_deletions"
SWEEP_BATCH = 100
# An upload's intent row waits this long: by then its request has committed (the row is gone) or failed.
UPLOAD_INTENT_GRACE = timedelta(minutes=15)


async def record_upload_intent(session: AsyncSession, object_key: str, now: datetime) -> None:
    """Written and committed before the upload: should the request die after the object is stored
    but before its row commits, the sweep removes the object once the grace period is over."""
    session.add(FileDeletion(object_key=object_key, not_before=now + UPLOAD_INTENT_GRACE))
    await session.flush()


async def forget_upload_intents(session: AsyncSession, object_key: str) -> None:
    """The object is live now (its row commits with this): drop every intent for its key, those
    of earlier attempts included (a retried export writes one per attempt)."""
    await session.execute(
        delete(FileDeletion).where(
            FileDeletion.object_key == object_key, FileDeletion.is_prefix.is_(False)
        )
    )


def queue_prefix_deletion(session: AsyncSession, prefix: str) -> None:
    session.add(FileDeletion(object_key=prefix, is_prefix=True))
    sweep_after_commit(session)


def queue_object_deletion(session: AsyncSession, object_key: str) -> None:
    session.add(FileDeletion(object_key=object_key))
    sweep_after_commit(session)


def sweep_after_commit(session: AsyncSession) -> None:
    """Process the outbox as soon as this transaction has committed (beat sweeps it anyway)."""
    defer(session, PROCESS_FILE_DELETIONS)


async def sweep(session: AsyncSession, storage: Storage, now: datetime) -> tuple[int, bool]:
    """Delete one batch of due objects. Returns (rows done, more may be due)."""
    due = list(
        await session.scalars(
            select(FileDeletion)
            .where(FileDeletion.not_before <= now)
            .order_by(FileDeletion.not_before)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    done = 0
    for row in due:
        try:
            if row.is_prefix:
                await storage.delete_prefix(row.object_key)
            else:
                await storage.delete(row.object_key)
        except StorageUnavailable:
            # S3 is down: every row waits; the next sweep (beat, or a retry) tries again.
            logger.warning("file storage unavailable; %d deletions postponed", len(due) - done)
            for pending in due[done:]:
                pending.attempts += 1
                pending.not_before = now + timedelta(
                    seconds=backoff(pending.attempts, base=30, cap=3600)
                )
            await session.flush()
            return done, False
        await session.delete(row)
        done += 1
    await session.flush()
    return done, len(due) == SWEEP_BATCH
