"""Lookups of the user's profile: the zone and locale the server writes in for them."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import ScalarSelect

from goaltrack.profile.models import UserSettings


async def get_zone(session: AsyncSession, user_id: uuid.UUID) -> ZoneInfo:
    """The user's own time zone: reminders and digests fire at their local wall-clock time."""
    name = await session.scalar(
        select(UserSettings.timezone).where(UserSettings.user_id == user_id)
    )
    return ZoneInfo(name or "UTC")


async def get_locale(session: AsyncSession, user_id: uuid.UUID) -> str:
    """The language of the texts the server writes for this user."""
    locale = await session.scalar(
        select(UserSettings.locale).where(UserSettings.user_id == user_id)
    )
    return locale or "en"


def zone_of(user_id: Any) -> ScalarSelect[str]:
    """The user's zone name, as a scalar subquery, for a statement whose rows a reader turns into
    local dates (`local_date`)."""
    return select(UserSettings.timezone).where(UserSettings.user_id == user_id).scalar_subquery()


def local_date(zone_name: str | None, now: datetime) -> date:
    """The user's date at `now` (a habit's "today")."""
    return now.astimezone(ZoneInfo(zone_name or "UTC")).date()
