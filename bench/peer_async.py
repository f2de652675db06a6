"""The async peer: our four hot reads as a team on this exact stack writes them.

Async routes, an `AsyncSession` per request from an asyncpg engine (`async_sessionmaker`,
`expire_on_commit=False`; the engine and a `redis.asyncio` client made in the lifespan), the
current user loaded in a dependency (`await session.get(User, ...)`, then an ORM query for a live
refresh token of the token's session, as our API checks), ORM objects with `selectinload` for
child rows, and Pydantic `response_model`s: the same models, schemas and statements as the
template peer (bench/peer_common.py), awaited.

    GET /goals?limit=&cursor=      GET /goals/{goal_id}
    GET /notifications?limit=&cursor=      GET /achievements

Each answers with the same JSON as our API (tests/test_bench_peer.py). The engine's pool holds as
many connections as our hot reads' pool (DATABASE_READ_POOL_SIZE), without overflow.
Run: `uvicorn bench.peer_async:app` with the app's environment.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from redis import RedisError
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bench import peer_common as common
from goaltrack.auth.models import User

settings = common.settings  # from the environment, as our API reads it


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.database_read_pool_size,
        max_overflow=0,
        connect_args={"server_settings": {"timezone": "UTC"}},
    )
    app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    app.state.redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        yield
    finally:
        await app.state.redis.aclose()
        await engine.dispose()


# --- dependencies ------------------------------------------------------------------------------


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_db)]


async def get_current_user(session: SessionDep, token: common.TokenDep) -> User:
    claims = common.token_claims(token)
    user = common.current(await session.get(User, claims.user_id), claims)
    if (await session.scalars(common.live_token(claims))).first() is None:
        raise common.credentials_error()
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


# --- routes ------------------------------------------------------------------------------------

app = FastAPI(lifespan=lifespan)


@app.get("/goals", response_model=common.GoalsPublic)
async def read_goals(
    session: SessionDep,
    current_user: CurrentUser,
    cursor: common.CursorDep,
    limit: common.Limit = common.DEFAULT_LIMIT,
) -> Any:
    limit = min(limit, common.MAX_LIMIT)
    rows = list(await session.scalars(common.goals_page(current_user, cursor, limit)))
    goals, after = common.next_cursor(rows, limit)
    return {"items": goals, "next_cursor": after}


@app.get("/goals/{goal_id}", response_model=common.GoalDetailPublic)
async def read_goal(session: SessionDep, current_user: CurrentUser, goal_id: uuid.UUID) -> Any:
    goal = (await session.scalars(common.goal_with_children(current_user, goal_id))).first()
    if goal is None:
        raise common.goal_not_found()
    return goal


@app.get("/notifications", response_model=common.NotificationsPublic)
async def read_notifications(
    session: SessionDep,
    current_user: CurrentUser,
    cursor: common.CursorDep,
    limit: common.Limit = common.DEFAULT_LIMIT,
) -> Any:
    limit = min(limit, common.MAX_LIMIT)
    rows = list(await session.scalars(common.notifications_page(current_user, cursor, limit)))
    notifications, after = common.next_cursor(rows, limit)
    unread = await session.scalar(common.unread_count(current_user))
    return {"items": notifications, "next_cursor": after, "unread_count": unread}


@app.get("/achievements", response_model=common.AchievementsPublic)
async def read_achievements(
    request: Request, session: SessionDep, current_user: CurrentUser
) -> Any:
    locale = await session.scalar(common.user_locale(current_user))
    achievements = (await session.scalars(common.CATALOGUE)).all()
    held = await session.scalars(common.earned_by(current_user))
    earned = {row.achievement_id: row.earned_at for row in held}
    redis: Redis = request.app.state.redis
    try:
        raw = await redis.get(common.STATS_KEY)
    except (RedisError, OSError):
        raw = None
    stats = json.loads(raw) if raw is not None else None
    return common.achievements_body(achievements, earned, locale, stats)
