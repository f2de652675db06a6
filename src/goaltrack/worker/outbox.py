"""The task outbox: a task that must run at least once is a row written in the transaction that
asked for it. The task deletes its row when done (the row id travels as the Celery task id); a
row whose publish failed (the broker down or hung) is due again within seconds, a row whose lease
runs out (its worker died) after the lease, and a periodic sweep sends both again. Tasks are
idempotent, so a rare second run is harmless.

A row may also be *held*: not sent until `not_before` (a push in the user's quiet hours, or a
publish the broker did not take). The sweep sends it then, as its first send, not as a resend.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ForeignKey, Index, String, delete, select, text, update
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
    # Waiting for `not_before` on purpose (`defer_durably(hold_until=)`, a task's `Hold`, a
    # publish the broker did not take): never sent yet since, so the sweep's send is not counted
    # as a resend.
    held: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
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
    hold_until: datetime | None = None,
) -> None:
    """Like `defer`, and recorded in the outbox in the same transaction: a broker outage at
    commit time delays the task, never loses it. The task deletes the row when done (its
    `outbox_id` travels as the Celery task id); a user's hard deletion drops their rows.
    With `hold_until` nothing is sent now: the sweep sends the task at that instant."""
    row = OutboxTask(
        id=uuid.uuid4(),
        name=name,
        args=list(args),
        not_before=hold_until or now + OUTBOX_LEASE,
        held=hold_until is not None,
        user_id=user_id,
    )
    session.add(row)
    if hold_until is None:
        defer_sent_by_id(session, name, args, row.id)


async def postpone(session: AsyncSession, outbox_id: uuid.UUID, until: datetime) -> None:
    """A durable task retries at `until`: the sweep must not send it again before then."""
    await session.execute(
        update(OutboxTask).where(OutboxTask.id == outbox_id).values(not_before=until + OUTBOX_LEASE)
    )


async def resend_unsent(session: AsyncSession, outbox_ids: list[uuid.UUID], now: datetime) -> None:
    """Rows whose publish failed for want of the broker (`defer.UNSENT`): held until
    RESEND_UNSENT_AFTER from now, not the lease; held, because a send that never reached the
    broker is no resend (an outage outlasting MAX_RESENDS sweeps does not lose them). A row held
    meanwhile, or due later than a lease from now (a retry's countdown), keeps its time."""
    await session.execute(
        update(OutboxTask)
        .where(
            OutboxTask.id.in_(outbox_ids),
            OutboxTask.not_before <= now + OUTBOX_LEASE,
            ~OutboxTask.held,
        )
        .values(not_before=now + RESEND_UNSENT_AFTER, held=True)
    )


async def hold(session: AsyncSession, outbox_id: uuid.UUID, until: datetime) -> None:
    """A durable task must not run before `until` (it raised `Hold`): the sweep sends it then."""
    await session.execute(
        update(OutboxTask).where(OutboxTask.id == outbox_id).values(not_before=until, held=True)
    )


async def wake_held(session: AsyncSession, *, user_id: uuid.UUID, now: datetime) -> None:
    """The user's held tasks are due now (what they waited for changed: their quiet hours or
    zone). Each runs and decides again; a push still inside the new window waits once more."""
    await session.execute(
        update(OutboxTask)
        .where(OutboxTask.user_id == user_id, OutboxTask.held, OutboxTask.not_before > now)
        .values(not_before=now)
    )


async def complete(session: AsyncSession, outbox_id: uuid.UUID) -> None:
    await session.execute(delete(OutboxTask).where(OutboxTask.id == outbox_id))


async def sweep(session: AsyncSession, now: datetime) -> int:
    """Send again every durable task whose lease ran out (its worker died, or its message was
    lost inside the broker), and every held one whose time has come (quiet hours over, a publish
    the broker did not take). The caller commits; the lease is renewed before the send."""
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
        if row.held:
            row.held = False  # its wait is over: this send is its first since, not a resend
        elif row.attempts >= MAX_RESENDS:
            # Sent this often and never done: a bug, not an outage. Say so and stop.
            logger.error(
                "outbox task %s %s given up after %d sends", row.name, row.id, row.attempts
            )
            await session.delete(row)
            continue
        else:
            row.attempts += 1
        row.not_before = now + OUTBOX_LEASE
        defer_sent_by_id(session, row.name, row.args, row.id)
        resent += 1
    await session.flush()
    return resent
