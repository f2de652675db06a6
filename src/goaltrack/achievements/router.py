from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from goaltrack.achievements import service
from goaltrack.achievements.schemas import AchievementList
from goaltrack.auth.caller import AccessClaimsDep, get_access_claims
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.deps import ReaderDep, RedisDep, SessionmakerDep
from goaltrack.hotpath import hot

router = APIRouter(
    prefix="/achievements",
    tags=["achievements"],
    dependencies=[Depends(get_access_claims)],
    route_class=IdempotentRoute,
)


@router.get("", response_model=AchievementList)
@hot
async def list_achievements(
    caller: AccessClaimsDep, reader: ReaderDep, redis: RedisDep, sessionmaker: SessionmakerDep
) -> Any:
    """The catalogue in order, whether the caller holds each one (live), and the share of users
    holding it (cached for a day)."""
    return await service.list_for_user(reader, sessionmaker, redis, caller=caller)
