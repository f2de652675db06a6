"""Starting an AI run, and applying its outcome. The goal's row lock (OwnedGoal in the request,
`goals.service.get_goal(lock=True)` in the task) serialises both: a double tap starts one run,
and a late answer cannot overwrite a newer one."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack import events
from goaltrack.ai.client import MAX_STAGES, StageDraft
from goaltrack.ai.errors import AiDailyLimit, AiInProgress, AiUnavailable
from goaltrack.ai.models import AiRun
from goaltrack.config import Settings
from goaltrack.defer import defer
from goaltrack.goals import service as goals
from goaltrack.goals.events import AiPlanApplied
from goaltrack.goals.models import Goal
from goaltrack.i18n import t
from goaltrack.notifications.kinds import AiFailedData, AiStagesReadyData
from goaltrack.notifications.service import notify
from goaltrack.observability.metrics import AI_RUNS
from goaltrack.profile.queries import get_locale

GENERATE_STAGES = "ai.generate_stages"
QUOTA_WINDOW = timedelta(days=1)


async def start_run(
    session: AsyncSession,
    settings: Settings,
    *,
    goal: Goal,
    max_stages: int | None,
    now: datetime,
) -> AiRun:
    """`goal` is locked by the caller."""
    if not settings.ai_api_key.get_secret_value():
        raise AiUnavailable
    if goal.ai_status == "pending":
        raise AiInProgress
    # The goal's lock does not serialise one user's requests on different goals: without this,
    # concurrent requests would all count the same runs and pass the daily limit together.
    # Transaction-scoped; taken after the goal's row lock, and nothing waits for a row lock
    # while holding it.
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended(f"ai_quota:{goal.user_id}", 0)))
    )
    used, oldest = (
        await session.execute(
            select(func.count(), func.min(AiRun.created_at)).where(
                AiRun.user_id == goal.user_id, AiRun.created_at > now - QUOTA_WINDOW
            )
        )
    ).one()
    if used >= settings.ai_daily_limit and oldest is not None:
        wait = oldest + QUOTA_WINDOW - now
        raise AiDailyLimit(retry_after=max(1, int(wait.total_seconds()) + 1))
    run = AiRun(
        id=uuid.uuid4(),
        user_id=goal.user_id,
        goal_id=goal.id,
        max_stages=max_stages or MAX_STAGES,
        status="pending",
        created_at=now,
    )
    session.add(run)
    goal.ai_status = "pending"
    goal.ai_error = None
    await session.flush()
    defer(session, GENERATE_STAGES, str(run.id))
    return run


async def lock_pending_run(session: AsyncSession, run_id: uuid.UUID) -> tuple[AiRun, Goal] | None:
    """The run and its goal, both locked (goal first, as every goal write does), if the run is
    still pending."""
    run = await session.get(AiRun, run_id)
    if run is None:
        return None
    goal = await goals.get_goal(session, user_id=run.user_id, goal_id=run.goal_id, lock=True)
    await session.refresh(run, with_for_update=True)
    if goal is None or run.status != "pending":
        return None
    return run, goal


async def apply_plan(
    session: AsyncSession,
    settings: Settings,
    *,
    run_id: uuid.UUID,
    stages: list[StageDraft],
    now: datetime,
) -> bool:
    """Completed stages stay; open ones are replaced by the plan; all in one transaction."""
    locked = await lock_pending_run(session, run_id)
    if locked is None:
        return False
    run, goal = locked
    added = await goals.replace_open_stages(
        session,
        settings,
        goal=goal,
        drafts=[(stage.title, stage.description) for stage in stages],
        now=now,
    )
    run.status, run.finished_at = "done", now
    AI_RUNS.labels("done").inc()
    goal.ai_status = "done"
    locale = await get_locale(session, goal.user_id)
    await notify(
        session,
        user_id=goal.user_id,
        data=AiStagesReadyData(goal_id=goal.id),
        title=t(locale, "ai_ready.title"),
        body=t(locale, "ai_ready.body", goal=goal.title, count=added),
        now=now,
    )
    await events.emit(session, AiPlanApplied(user_id=goal.user_id, goal_id=goal.id, now=now))
    return True


async def fail_run(session: AsyncSession, *, run_id: uuid.UUID, reason: str, now: datetime) -> bool:
    """No stage changes; the goal says why, and the user is told."""
    locked = await lock_pending_run(session, run_id)
    if locked is None:
        return False
    run, goal = locked
    run.status, run.error, run.finished_at = "failed", reason, now
    AI_RUNS.labels("failed").inc()
    goal.ai_status = "failed"
    goal.ai_error = reason
    locale = await get_locale(session, goal.user_id)
    await notify(
        session,
        user_id=goal.user_id,
        data=AiFailedData(goal_id=goal.id, reason=reason),
        title=t(locale, "ai_failed.title"),
        body=t(locale, "ai_failed.body", goal=goal.title),
        now=now,
    )
    return True


async def stale_runs(session: AsyncSession, *, older_than: datetime) -> list[uuid.UUID]:
    return list(
        await session.scalars(
            select(AiRun.id)
            .where(AiRun.status == "pending", AiRun.created_at < older_than)
            .limit(500)
        )
    )
