"""The peer: GET /goals written the way the official full-stack FastAPI template writes routes.

Sync `def` routes (run in the threadpool), a sync SQLAlchemy ORM `Session` per request from a
psycopg engine (pool 40, so that every threadpool slot can hold a connection), the current user
loaded in a dependency (`session.get(User, ...)`), ORM objects, and a Pydantic `response_model`.

Run: `uvicorn bench.peer_template:app` with DATABASE_URL, JWT_SECRET (and JWT_ISSUER) set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import date, datetime
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from goaltrack.auth.models import User
from goaltrack.goals.models import Goal

PAGE_SIZE = 20

SECRET_KEY = os.environ["JWT_SECRET"]
ISSUER = os.environ.get("JWT_ISSUER", "goaltrack")
DATABASE_URI = os.environ["DATABASE_URL"].replace("+asyncpg", "+psycopg", 1)

engine = create_engine(
    DATABASE_URI,
    pool_size=40,
    max_overflow=0,
    pool_pre_ping=True,
    connect_args={"options": "-c timezone=UTC"},
)


def get_db() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]
reusable_oauth2 = OAuth2PasswordBearer(tokenUrl="/auth/login")
TokenDep = Annotated[str, Depends(reusable_oauth2)]


class TokenPayload(BaseModel):
    sub: uuid.UUID
    typ: str
    tv: int


def get_current_user(session: SessionDep, token: TokenDep) -> User:
    credentials_error = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED, detail="Could not validate credentials"
    )
    try:
        payload = jwt.decode(
            token,
            SECRET_KEY,
            algorithms=["HS256"],
            issuer=ISSUER,
            options={"require": ["sub", "iat", "exp", "typ", "tv", "iss"]},
        )
        token_data = TokenPayload(**payload)
    except (jwt.PyJWTError, ValidationError) as exc:
        raise credentials_error from exc
    if token_data.typ != "access":
        raise credentials_error
    user = session.get(User, token_data.sub)
    if user is None or user.deleted_at is not None or user.token_version != token_data.tv:
        raise credentials_error
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


class GoalPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    description: str | None
    deadline: date | None
    progress: int
    is_archived: bool
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    stage_count: int
    completed_stage_count: int
    ai_status: str


class GoalsPublic(BaseModel):
    items: list[GoalPublic]
    next_cursor: str | None


app = FastAPI()


@app.get("/goals", response_model=GoalsPublic)
def read_goals(session: SessionDep, current_user: CurrentUser) -> Any:
    statement = (
        select(Goal)
        .where(Goal.user_id == current_user.id, Goal.is_archived.is_(False))
        .order_by(Goal.created_at.desc(), Goal.id.desc())
        .limit(PAGE_SIZE + 1)
    )
    goals = session.scalars(statement).all()
    next_cursor = None
    if len(goals) > PAGE_SIZE:
        goals = goals[:PAGE_SIZE]
        next_cursor = f"{goals[-1].created_at.isoformat()}|{goals[-1].id}"
    return {"items": goals, "next_cursor": next_cursor}
