from __future__ import annotations

from fastapi import APIRouter

from goaltrack.account.queries import get_locale
from goaltrack.achievements import service
from goaltrack.achievements.schemas import AchievementList
from goaltrack.auth.dependencies import CurrentUser
from goaltrack.db import SessionDep
from goaltrack.deps import RedisDep

router = APIRouter(prefix="/achievements", tags=["achievements"])


@router.get("")
async def list_achievements(
    user: CurrentUser, session: SessionDep, redis: RedisDep
) -> AchievementList:
    """The catalogue in order, whether the caller holds each one (live), and the share of users
    holding it (cached for a day)."""
    locale = await get_locale(session, user.id)
    return await service.list_for_user(session, redis, user_id=user.id, locale=locale)
