"""Awarding achievements on domain events, and the share of users holding each one.

Awarding runs inside the event's transaction: the user's counters move with one upsert, only the
achievements the event can affect and the user does not hold yet are checked, and the award is an
INSERT ... ON CONFLICT DO NOTHING on (user_id, achievement_id) — idempotent, harmless in a race,
never revoked. Each award writes an `achievement` notification (and its push).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import (
    ARRAY,
    Integer,
    String,
    and_,
    any_,
    bindparam,
    exists,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from goaltrack.achievements import queries, texts
from goaltrack.achievements.conditions import METRICS
from goaltrack.achievements.models import Achievement, UserAchievement, UserStats
from goaltrack.auth.models import User
from goaltrack.auth.security import AccessClaims
from goaltrack.notifications.kinds import AchievementData
from goaltrack.notifications.service import notify
from goaltrack.profile.queries import get_locale
from goaltrack.reads import PreparedStatement, Reader

logger = logging.getLogger(__name__)

STATS_KEY = "achievements:stats"
STATS_TTL_SECONDS = 24 * 3600
STATS_LOCK_KEY = "achievements:stats:lock"
STATS_LOCK_SECONDS = 60  # longer than the grouped query ever takes
# A request behind the lock waits this long for the winner's result: several times what the
# grouped query takes over a million users (measured by bench/achievements_cost.py).
STATS_WAIT_SECONDS = 10.0


# Built once per shape (each event adds the same counters and checks the same metrics): building
# them cost more CPU than running them (bench/).
@cache
def count_up(counters: tuple[str, ...], metrics: tuple[str, ...]) -> PreparedStatement:
    """The user's counters moved by `counters` (an upsert) and, in the same round trip, the
    achievements on `metrics` the user does not hold yet: one row per candidate, each with the
    new counters (a single row with no achievement when there is none)."""
    counted = (
        insert(UserStats)
        .values(
            {
                "user_id": bindparam("user_id"),
                # Every counter named: a column left out would take its Python-side default,
                # which only SQLAlchemy's own execution fills in.
                **{
                    column.key: bindparam(column.key, type_=Integer)
                    if column.key in counters
                    else literal_column("0", Integer)
                    for column in UserStats.__table__.columns
                    if column.key != "user_id"
                },
            }
        )
        .on_conflict_do_update(
            index_elements=[UserStats.user_id],
            set_={name: getattr(UserStats, name) + bindparam(name) for name in counters},
        )
        .returning(*UserStats.__table__.columns)
        .cte("counted")
    )
    not_held = ~exists().where(
        UserAchievement.user_id == counted.c.user_id,
        UserAchievement.achievement_id == Achievement.id,
    )
    return PreparedStatement(
        select(
            counted,
            Achievement.id.label("achievement_id"),
            Achievement.code,
            Achievement.condition,
            Achievement.threshold,
        )
        .select_from(counted)
        .outerjoin(
            Achievement,
            and_(
                Achievement.condition == any_(bindparam("metrics", metrics, type_=ARRAY(String))),
                not_held,
            ),
        )
        .order_by(Achievement.position)
    )


async def record(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    counters: dict[str, int],
    metrics: Sequence[str],
    now: datetime,
) -> list[Any]:
    """Add `counters` to the user's stats, then award what `metrics` now reach (the user's
    locale, for the notifications' texts, is read only when there is something to award).
    Returns the achievements awarded (rows with `achievement_id`, `code`, `condition`...)."""
    rows = await count_up(tuple(sorted(counters)), tuple(sorted(metrics))).execute(
        session, {"user_id": user_id, **counters}
    )
    stats = dict(rows[0]._mapping)
    reached = [
        achievement
        for achievement in rows
        if achievement.achievement_id is not None
        and await METRICS[achievement.condition](session, user_id, stats) >= achievement.threshold
    ]
    if not reached:
        return []
    inserted = set(
        await session.scalars(
            insert(UserAchievement)
            .values(
                [
                    {
                        "user_id": user_id,
                        "achievement_id": achievement.achievement_id,
                        "earned_at": now,
                    }
                    for achievement in reached
                ]
            )
            .on_conflict_do_nothing()
            .returning(UserAchievement.achievement_id)
        )
    )
    awarded = [a for a in reached if a.achievement_id in inserted]
    locale = await get_locale(session, user_id) if awarded else "en"
    for achievement in awarded:
        await notify(
            session,
            user_id=user_id,
            data=AchievementData(achievement_code=achievement.code),
            title=texts.title(achievement.code, locale),
            body=texts.description(achievement.code, locale),
            now=now,
        )
    return awarded


@dataclass(frozen=True, slots=True)
class Stats:
    users: int
    holders: dict[str, int]

    def percent(self, code: str) -> float:
        if self.users == 0:
            return 0.0
        return round(100 * self.holders.get(code, 0) / self.users, 1)

    def dump(self) -> str:
        return json.dumps({"users": self.users, "holders": self.holders})

    @classmethod
    def load(cls, raw: bytes | str) -> Stats:
        data = json.loads(raw)
        return cls(
            users=int(data["users"]), holders={k: int(v) for k, v in data["holders"].items()}
        )


async def compute_stats(session: AsyncSession) -> Stats:
    """Holders per achievement and users, counting only accounts not soft-deleted: one grouped
    query (a hash join of user_achievements with users), run once a day or on a cache miss."""
    users = func.count().filter(User.deleted_at.is_(None))
    rows = await session.execute(
        select(UserAchievement.achievement_id, users)
        .join(User, User.id == UserAchievement.user_id)
        .group_by(UserAchievement.achievement_id)
    )
    by_id = dict(rows.all())
    codes = dict((await session.execute(select(Achievement.id, Achievement.code))).all())
    total = await session.scalar(
        select(func.count()).select_from(User).where(User.deleted_at.is_(None))
    )
    return Stats(
        users=int(total or 0), holders={codes[i]: int(n) for i, n in by_id.items() if i in codes}
    )


async def refresh_stats(session: AsyncSession, redis: Redis) -> Stats:
    stats = await compute_stats(session)
    await redis.set(STATS_KEY, stats.dump(), ex=STATS_TTL_SECONDS)
    return stats


async def cached_stats(
    sessionmaker: async_sessionmaker[AsyncSession] | None, redis: Redis
) -> Stats | None:
    """The statistics from Redis; on a miss exactly one request (the lock's holder) computes them
    (on a session of its own from `sessionmaker`) while the others wait for its result. None when
    Redis is unavailable or the wait runs out (or on a miss without a sessionmaker): the caller
    then serves the catalogue without percentages rather than run the grouped query once per
    request."""
    try:
        raw = await redis.get(STATS_KEY)
        if raw is not None:
            return Stats.load(raw)
        if sessionmaker is None:
            return None
        if await redis.set(STATS_LOCK_KEY, "1", nx=True, ex=STATS_LOCK_SECONDS):
            try:
                async with sessionmaker() as session:
                    return await refresh_stats(session, redis)
            finally:
                await redis.delete(STATS_LOCK_KEY)
        async with asyncio.timeout(STATS_WAIT_SECONDS):
            # Another process holds the lock: nothing local to wait on, so poll the key.
            while (raw := await redis.get(STATS_KEY)) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return Stats.load(raw)
    except (RedisError, OSError, TimeoutError):
        logger.warning("achievement statistics unavailable (Redis)")
        return None


async def list_for_user(
    reader: Reader,
    sessionmaker: async_sessionmaker[AsyncSession] | None,
    redis: Redis,
    *,
    caller: AccessClaims,
) -> dict[str, Any]:
    """The catalogue for the caller, shaped as `AchievementList`."""
    rows = await queries.catalogue(reader, caller)
    stats = await cached_stats(sessionmaker, redis)
    return {
        "items": [
            {
                "code": row["code"],
                "title": texts.title(row["code"], row["locale"]),
                "description": texts.description(row["code"], row["locale"]),
                "icon": row["icon"],
                "earned": row["earned_at"] is not None,
                "earned_at": row["earned_at"],
                "percent_of_users": stats.percent(row["code"]) if stats else None,
            }
            for row in rows
        ],
        "stats_available": stats is not None,
    }
