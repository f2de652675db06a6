from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, status

from goaltrack.ai import service
from goaltrack.ai.errors import AiDailyLimit, AiInProgress, AiUnavailable
from goaltrack.ai.schemas import AiSyncAccepted, AiSyncRequest
from goaltrack.auth.caller import get_access_claims
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.clock import Now
from goaltrack.db import SessionDep
from goaltrack.deps import SettingsDep
from goaltrack.errors import NotFound, error_responses
from goaltrack.goals.dependencies import OwnedGoal

router = APIRouter(
    prefix="/goals",
    tags=["goals"],
    dependencies=[Depends(get_access_claims)],
    route_class=IdempotentRoute,
)


@router.post(
    "/{goal_id}/ai-sync",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(NotFound, AiInProgress, AiUnavailable, AiDailyLimit),
)
async def split_with_ai(
    goal: OwnedGoal,
    session: SessionDep,
    settings: SettingsDep,
    now: Now,
    body: Annotated[AiSyncRequest | None, Body()] = None,
) -> AiSyncAccepted:
    """Split the goal into stages with AI, in the background: completed stages stay, open ones
    are replaced. The outcome arrives as `ai_stages_ready` or `ai_failed` (feed and push) and
    in the goal's `ai_status` / `ai_error`. Answers 503 `ai_unavailable` when the server has no
    AI_API_KEY."""
    await service.start_run(
        session, settings, goal=goal, max_stages=body.max_stages if body else None, now=now
    )
    return AiSyncAccepted()
