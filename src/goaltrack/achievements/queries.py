"""The catalogue's hot read: every achievement in order, the caller's language, and whether and
when the caller earned each — one round trip, the caller's token check folded in. The texts are
the message catalogue's (`achievements.texts`), by code."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select, true

from goaltrack.achievements.models import Achievement, UserAchievement
from goaltrack.auth.caller import caller_is_current, caller_params
from goaltrack.auth.models import User
from goaltrack.auth.security import AccessClaims
from goaltrack.errors import NotAuthenticated
from goaltrack.i18n import DEFAULT_LOCALE
from goaltrack.profile.models import UserSettings
from goaltrack.reads import PreparedStatement, Reader


def _catalogue_statement() -> Any:
    return (
        select(
            User.id.label("caller_id"),
            Achievement.code,
            func.coalesce(UserSettings.locale, DEFAULT_LOCALE).label("locale"),
            Achievement.icon,
            UserAchievement.earned_at,
        )
        .select_from(User)
        .outerjoin(UserSettings, UserSettings.user_id == User.id)
        # Outer: an empty catalogue still returns the caller's row (authenticated, no items).
        .outerjoin(Achievement, true())
        .outerjoin(
            UserAchievement,
            and_(
                UserAchievement.achievement_id == Achievement.id,
                UserAchievement.user_id == User.id,
            ),
        )
        .where(caller_is_current())
        .order_by(Achievement.position)
    )


CATALOGUE = PreparedStatement(_catalogue_statement())


async def catalogue(reader: Reader, caller: AccessClaims) -> list[Any]:
    """The catalogue rows (code, locale, icon, earned_at) for the caller."""
    rows = await reader.fetch(CATALOGUE, caller_params(caller))
    if not rows:
        raise NotAuthenticated
    return [row for row in rows if row["code"] is not None]
