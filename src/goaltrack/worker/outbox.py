"""The task outbox: a task that must run at least once is a row written in the transaction that
asked for it. The task deletes its row when done (the row id travels as the Celery task id); a
row whose publish failed (the broker down or hung) is due again within seconds, a row whose lease
runs out (its worker died) after the lease, and a periodic sweep sends both again. Tasks are
idempotent, so a rare second run is harmless.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ForeignKey, Index, String, delete, func, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from goaltrack.db import Base, CreatedAt, UUIDPrimaryKey
from goaltrack.defer import defer_sent_by_id

# A durable task not done after this long is sent again (longer than any task's time limit).
OUTBOX_LEASE = timedelta(minutes=15)
SWEEP_BATCH = 500
# Re-sends after a lost send or a dead worker; retries a task asks for itself do not count.
MAX_RESENDS = 8
# A row whose publish failed for want of the broker is due again this soon, not after the lease
# (which waits for a worker that died). Not at once: a publish that timed out on a hung broker may
# still land when it wakes, and this leaves it the time to run and delete its row first.
RESEND_UNSENT_AFTER = timedelta(seconds=10)

logger = logging.getLogger(__name__)


class OutboxTask(UUIDPrimaryKey, CreatedAt, Base):
    """A task that must run at least once: deleted when it has run, re-sent while it has not."""

    __tablename__ = "task_outbox"

    name: Mapped[str] = mapped_column(String(128))
    args: Mapped[list[Any]] = mapped_column(JSONB)
    # When the sweep may send it (again): after the lease, or after a retry's countdown.
    not_before: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))

    __table_args__ = (
        # The sweep: WHERE not_before <= now() ORDER BY not_before ... SKIP LOCKED
        Index("ix_task_outbox_not_before", "not_before"),
        Index("ix_task_outbox_user_id", "user_id"),
    )


def defer_durably(
    session: AsyncSession,
    name: str,
    *args: Any,
    now: datetime,
    user_id: uuid.UUID | None = None,
) -> None:
    """Like `defer`, and recorded in the outbox in the same transaction: a broker outage at
    commit time delays the task, never loses it. The task deletes the row when done (its
    `outbox_id` travels as the Celery task id); a user's hard deletion drops their rows."""
    row = OutboxTask(
        id=uuid.uuid4(), name=name, args=list(args), not_before=now + OUTBOX_LEASE, user_id=user_id
    )
    session.add(row)
    defer_sent_by_id(session, name, args, row.id)


async def postpone(session: AsyncSession, outbox_id: uuid.UUID, until: datetime) -> None:
    """A durable task retries at `until`: the sweep must not send it again before then."""
    await session.execute(
        update(OutboxTask).where(OutboxTask.id == outbox_id).values(not_before=until + OUTBOX_LEASE)
    )


async def resend_unsent(session: AsyncSession, outbox_ids: list[uuid.UUID], now: datetime) -> None:
    """Rows whose publish failed for want of the broker (`defer.UNSENT`): due again
    RESEND_UNSENT_AFTER from now, and a send that never reached the broker is no resend (an
    outage outlasting MAX_RESENDS sweeps does not lose them). A row due later than a lease from
    now (a retry's countdown, a task held until later) keeps its time."""
    await session.execute(
        update(OutboxTask)
        .where(OutboxTask.id.in_(outbox_ids), OutboxTask.not_before <= now + OUTBOX_LEASE)
        .values(
            not_before=now + RESEND_UNSENT_AFTER,
            attempts=func.greatest(OutboxTask.attempts - 1, 0),
        )
    )


async def complete(session: AsyncSession, outbox_id: uuid.UUID) -> None:
    await session.execute(delete(OutboxTask).where(OutboxTask.id == outbox_id))


async def sweep(session: AsyncSession, now: datetime) -> int:
    """Send again every durable task whose lease ran out (its first send was lost, or its
    worker died). The caller commits; the lease is renewed before the send."""
    due = list(
        await session.scalars(
            select(OutboxTask)
            .where(OutboxTask.not_before <= now)
            .order_by(OutboxTask.not_before)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    resent = 0
    for row in due:
        if row.attempts >= MAX_RESENDS:
            # Sent this often and never done: a bug, not an outage. Say so and stop.
            logger.error(
                "outbox task %s %s given up after %d sends", row.name, row.id, row.attempts
            )
            await session.delete(row)
            continue
        row.not_before = now + OUTBOX_LEASE
        row.attempts += 1
        defer_sent_by_id(session, row.name, row.args, row.id)
        resent += 1
    await session.flush()
    return resent
