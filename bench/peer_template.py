"""The template peer: our four hot reads written the way the official full-stack FastAPI template
writes routes.

Sync `def` routes (run in the threadpool), a sync SQLAlchemy ORM `Session` per request from a
psycopg engine (pool 40, so that every threadpool slot can hold a connection), the current user
loaded in a dependency (`session.get(User, ...)`, then an ORM query for a live refresh token of
the token's session, as our API checks), ORM objects with `selectinload` for child rows, and
Pydantic `response_model`s (models, schemas and statements: bench/peer_common.py):

    GET /goals?limit=&cursor=      GET /goals/{goal_id}
    GET /notifications?limit=&cursor=      GET /achievements

Each answers with the same JSON as our API for the same request (tests/test_bench_peer.py), but
for the signature time in attachment URLs. For fairness the token is verified by our own
`decode_access_token` (the same per-token cache our API uses).

Configuration comes from the environment through `goaltrack.config.Settings`, as our API reads
it: DATABASE_URL, JWT_SECRET, JWT_ISSUER, REDIS_URL, S3_*, ATTACHMENT_URL_TTL_SECONDS.
Run: `uvicorn bench.peer_template:app` with DATABASE_URL and JWT_SECRET (and JWT_ISSUER) set.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bench import peer_common as common
from goaltrack.auth.models import User

settings = common.settings  # from the environment, as our API reads it

engine = create_engine(
    settings.database_url.replace("+asyncpg", "+psycopg", 1),
    pool_size=40,
    max_overflow=0,
    connect_args={"options": "-c timezone=UTC"},
)

redis_client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)


# --- dependencies ------------------------------------------------------------------------------


def get_db() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def get_current_user(session: SessionDep, token: common.TokenDep) -> User:
    claims = common.token_claims(token)
    user = common.current(session.get(User, claims.user_id), claims)
    if session.scalars(common.live_token(claims)).first() is None:
        raise common.credentials_error()
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


# --- routes ------------------------------------------------------------------------------------

app = FastAPI()


@app.get("/goals", response_model=common.GoalsPublic)
def read_goals(
    session: SessionDep,
    current_user: CurrentUser,
    cursor: common.CursorDep,
    limit: common.Limit = common.DEFAULT_LIMIT,
) -> Any:
    limit = min(limit, common.MAX_LIMIT)
    goals, after = common.next_cursor(
        list(session.scalars(common.goals_page(current_user, cursor, limit))), limit
    )
    return {"items": goals, "next_cursor": after}


@app.get("/goals/{goal_id}", response_model=common.GoalDetailPublic)
def read_goal(session: SessionDep, current_user: CurrentUser, goal_id: uuid.UUID) -> Any:
    goal = session.scalars(common.goal_with_children(current_user, goal_id)).first()
    if goal is None:
        raise common.goal_not_found()
    return goal


@app.get("/notifications", response_model=common.NotificationsPublic)
def read_notifications(
    session: SessionDep,
    current_user: CurrentUser,
    cursor: common.CursorDep,
    limit: common.Limit = common.DEFAULT_LIMIT,
) -> Any:
    limit = min(limit, common.MAX_LIMIT)
    rows = list(session.scalars(common.notifications_page(current_user, cursor, limit)))
    notifications, after = common.next_cursor(rows, limit)
    unread = session.scalar(common.unread_count(current_user))
    return {"items": notifications, "next_cursor": after, "unread_count": unread}


@app.get("/achievements", response_model=common.AchievementsPublic)
def read_achievements(session: SessionDep, current_user: CurrentUser) -> Any:
    locale = session.scalar(common.user_locale(current_user))
    achievements = session.scalars(common.CATALOGUE).all()
    earned = {
        row.achievement_id: row.earned_at for row in session.scalars(common.earned_by(current_user))
    }
    try:
        raw = redis_client.get(common.STATS_KEY)
    except (redis.RedisError, OSError):
        raw = None
    stats = json.loads(raw) if raw is not None else None
    return common.achievements_body(achievements, earned, locale, stats)
