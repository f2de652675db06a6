from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded

from goaltrack.ai import client, service
from goaltrack.ai.models import AiRun
from goaltrack.clock import utcnow
from goaltrack.goals.models import Goal
from goaltrack.worker.registry import TICK, RetryLater, backoff, task
from goaltrack.worker.runtime import current_attempt, task_session, task_settings

logger = logging.getLogger(__name__)

TIMED_OUT = "The AI did not answer in time; try again later."
UNAVAILABLE = "The AI service is unavailable right now; try again later."
# A pending run older than its deadline plus this has no task working on it any more.
STALE_MARGIN = timedelta(seconds=60)


@task(
    service.GENERATE_STAGES,
    max_retries=8,
    # The outer guard (prefork workers); the deadline is also enforced inside, for any pool.
    soft_time_limit=lambda settings: settings.ai_timeout_seconds + 5,
    time_limit=lambda settings: settings.ai_timeout_seconds + 15,
)
async def generate_stages(run_id: str) -> None:
    """Ask the AI for a plan and apply it, or fail the run cleanly. Retries only transient
    errors (429, 5xx, timeouts, connection), with backoff, within AI_TIMEOUT_SECONDS of the
    request."""
    settings = task_settings()
    async with task_session() as session:
        run = await session.get(AiRun, uuid.UUID(run_id))
        goal = await session.get(Goal, run.goal_id) if run else None
        if run is None or goal is None or run.status != "pending":
            return
        text = client.GoalText(goal.title, goal.description)
        deadline = run.created_at + timedelta(seconds=settings.ai_timeout_seconds)
        maximum = run.max_stages
    remaining = (deadline - utcnow()).total_seconds()
    try:
        if remaining <= 0:
            raise TimeoutError
        async with asyncio.timeout(remaining):
            stages = await client.generate_stages(settings, text, maximum=maximum)
    except (TimeoutError, SoftTimeLimitExceeded):
        await _fail(run_id, TIMED_OUT)
    except client.AiTransientError as exc:
        countdown = backoff(current_attempt().retries, base=2, cap=30)
        if current_attempt().is_last or utcnow() + timedelta(seconds=countdown) >= deadline:
            logger.warning("AI run %s: %s, out of time", run_id, exc)
            await _fail(run_id, UNAVAILABLE)
            return
        raise RetryLater(countdown, str(exc)) from exc
    except client.AiError as exc:
        await _fail(run_id, f"The AI could not make a plan: {exc}.")
    else:
        async with task_session() as session:
            await service.apply_plan(
                session, settings, run_id=uuid.UUID(run_id), stages=stages, now=utcnow()
            )


async def _fail(run_id: str, reason: str) -> None:
    async with task_session() as session:
        await service.fail_run(session, run_id=uuid.UUID(run_id), reason=reason, now=utcnow())


@task("ai.fail_stale_runs", every=TICK)
async def fail_stale_runs() -> int:
    """A run whose worker died (or whose task was lost with the broker) is failed once its
    deadline has passed: a goal is never left `pending` for ever."""
    settings = task_settings()
    now = utcnow()
    older_than = now - timedelta(seconds=settings.ai_timeout_seconds) - STALE_MARGIN
    async with task_session() as session:
        stale = await service.stale_runs(session, older_than=older_than)
    for run_id in stale:
        async with task_session() as session:
            await service.fail_run(session, run_id=run_id, reason=TIMED_OUT, now=now)
    return len(stale)
