"""The ceiling: Starlette + a raw asyncpg pool + orjson, doing what GET /goals does.

Same token checks as the app (PyJWT, HS256, issuer, required claims, typ, integer tv), the same
SQL text (compiled from the app's own statement), the same response shape. Nothing else.

Run: `uvicorn bench.baseline:app` with DATABASE_URL, JWT_SECRET (and JWT_ISSUER) in the environment.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import jwt
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.sql import list_param_names, list_sql

PAGE_SIZE = 20
POOL_SIZE = 10

_SECRET = os.environ["JWT_SECRET"]
_ISSUER = os.environ.get("JWT_ISSUER", "goaltrack")
_DSN = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)
_SQL = list_sql()
_PARAMS = list_param_names()
_REQUIRED: jwt.types.Options = {"require": ["sub", "iat", "exp", "typ", "tv", "sid", "iss"]}
_UNAUTHORIZED = Response(
    b'{"code":"not_authenticated"}', status_code=401, media_type="application/json"
)

pool: asyncpg.Pool | None = None


def _claims(request: Request) -> tuple[uuid.UUID, int, uuid.UUID] | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        claims = jwt.decode(token, _SECRET, algorithms=["HS256"], issuer=_ISSUER, options=_REQUIRED)
        if claims["typ"] != "access" or type(claims["tv"]) is not int:
            return None
        return uuid.UUID(claims["sub"]), claims["tv"], uuid.UUID(claims["sid"])
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError):
        return None


def _cursor(item: dict[str, Any]) -> str:
    raw = f"{item['created_at'].isoformat()}|{item['id']}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def list_goals(request: Request) -> Response:
    caller = _claims(request)
    if caller is None:
        return _UNAUTHORIZED
    values = {
        "user_id": caller[0],
        "token_version": caller[1],
        "session_id": caller[2],
        "archived": False,
        "limit": PAGE_SIZE + 1,
    }
    assert pool is not None
    rows = await pool.fetch(_SQL, *(values[name] for name in _PARAMS))
    if not rows:
        return _UNAUTHORIZED
    items = []
    for row in rows:
        if row["id"] is not None:
            item = dict(row)
            del item["caller_id"]
            items.append(item)
    next_cursor = None
    if len(items) > PAGE_SIZE:
        items = items[:PAGE_SIZE]
        next_cursor = _cursor(items[-1])
    # asyncpg's own UUID type is not one orjson knows: `str` renders it.
    body = orjson.dumps({"items": items, "next_cursor": next_cursor}, default=str)
    return Response(body, media_type="application/json")


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(
        _DSN, min_size=POOL_SIZE, max_size=POOL_SIZE, server_settings={"timezone": "UTC"}
    )
    try:
        yield
    finally:
        await pool.close()


app = Starlette(routes=[Route("/goals", list_goals)], lifespan=lifespan)
