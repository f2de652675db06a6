from __future__ import annotations

from goaltrack.clock import utcnow
from goaltrack.worker import outbox
from goaltrack.worker.registry import TICK, task
from goaltrack.worker.runtime import in_batches


@task("worker.sweep_outbox", every=TICK)
async def sweep_outbox() -> int:
    """Send again the durable tasks whose first send was lost or whose worker died."""
    return await in_batches(outbox.SWEEP_BATCH, lambda session: outbox.sweep(session, utcnow()))
