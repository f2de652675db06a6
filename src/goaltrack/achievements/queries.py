"""The catalogue's hot read: every achievement in order, in the caller's language, with whether
and when the caller earned it — one round trip, the caller's token check folded in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, String, and_, func, literal, select, true

from goaltrack.achievements.models import Achievement, UserAchievement
from goaltrack.auth.caller import caller_is_current, caller_params
from goaltrack.auth.models import User
from goaltrack.auth.security import AccessClaims
from goaltrack.errors import NotAuthenticated
from goaltrack.profile.models import UserSettings
from goaltrack.reads import PreparedStatement, Reader

DEFAULT_LOCALE = "en"


def _in_locale(texts: Any, locale: ColumnElement[str]) -> ColumnElement[str]:
    """`{"en": ..., "ru": ...}` read in the caller's locale, English when it has no such text."""
    read = texts.op("->>", return_type=String)
    return func.coalesce(read(locale), read(literal(DEFAULT_LOCALE)))


def _catalogue_statement() -> Any:
    locale = func.coalesce(UserSettings.locale, DEFAULT_LOCALE)
    return (
        select(
            User.id.label("caller_id"),
            Achievement.code,
            _in_locale(Achievement.title, locale).label("title"),
            _in_locale(Achievement.description, locale).label("description"),
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
    """The catalogue rows (code, title, description, icon, earned_at) for the caller."""
    rows = await reader.fetch(CATALOGUE, caller_params(caller))
    if not rows:
        raise NotAuthenticated
    return [row for row in rows if row["code"] is not None]
