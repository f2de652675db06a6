from __future__ import annotations

from datetime import timedelta

from goaltrack import idempotency
from goaltrack.clock import utcnow
from goaltrack.worker import outbox
from goaltrack.worker.registry import TICK, task
from goaltrack.worker.runtime import in_batches


@task("worker.sweep_outbox", every=TICK)
async def sweep_outbox() -> int:
    """Send again the durable tasks whose first send was lost or whose worker died."""
    return await in_batches(outbox.SWEEP_BATCH, lambda session: outbox.sweep(session, utcnow()))


@task("idempotency.delete_expired", every=timedelta(hours=1))
async def delete_expired_idempotency_keys() -> int:
    """Idempotency records older than 24 h go, a batch per transaction (a replay ignores them
    already)."""
    return await in_batches(
        idempotency.SWEEP_BATCH, lambda session: idempotency.delete_expired(session, utcnow())
    )
