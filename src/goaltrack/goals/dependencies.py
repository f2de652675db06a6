from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from goaltrack.auth.dependencies import AccessClaimsDep
from goaltrack.auth.queries import CURRENT_CALLER, caller_params
from goaltrack.auth.security import AccessClaims
from goaltrack.clock import Now
from goaltrack.config import Settings
from goaltrack.db import SessionDep
from goaltrack.deps import SessionmakerDep, SettingsDep
from goaltrack.errors import NotAuthenticated, NotFound
from goaltrack.goals import attachments, queries, service
from goaltrack.goals.attachments import UploadSlot
from goaltrack.goals.models import Goal
from goaltrack.goals.schemas import GoalOut
from goaltrack.reads import json_response
from goaltrack.storage import Storage
from goaltrack.uploads import Upload, read_upload

GoalId = Annotated[uuid.UUID, Path(description="The goal's id.")]


def _owned_goal(*, lock: bool) -> Callable[..., Awaitable[Goal]]:
    async def load(goal_id: GoalId, claims: AccessClaimsDep, session: SessionDep) -> Goal:
        """The caller's goal, or 404 — whether it does not exist or belongs to someone else; 401
        when the token is no longer current.

        Writes lock the row: changes to one goal (stages, progress, limits) are serialised.
        One statement checks the token and the owner together; only when it finds nothing does
        a second tell a stale token (401) from a goal that is not the caller's (404)."""
        goal = await service.get_callers_goal(session, caller=claims, goal_id=goal_id, lock=lock)
        if goal is None:
            if await session.scalar(CURRENT_CALLER, caller_params(claims)) is None:
                raise NotAuthenticated
            raise NotFound
        return goal

    return load


async def get_verified_claims(
    claims: AccessClaimsDep, sessionmaker: SessionmakerDep
) -> AccessClaims:
    """The access token checked against the database (version, account not deleted) on a short
    connection of its own, before an upload's body is read: a revoked token gets its 401 before
    the server reads megabytes or writes an upload intent."""
    async with sessionmaker() as session:
        current = await session.scalar(CURRENT_CALLER, caller_params(claims))
    if current is None:
        raise NotAuthenticated
    return claims


async def get_upload(
    request: Request,
    settings: SettingsDep,
    _caller: Annotated[AccessClaims, Depends(get_verified_claims)],
) -> AsyncIterator[Upload]:
    """The request's file, read and bounded before anything else but the token's check (FastAPI
    resolves dependencies in parameter order): a slow client must not hold a database
    connection or the goal's lock."""
    upload = await read_upload(request, max_bytes=settings.max_upload_bytes)
    try:
        yield upload
    finally:
        upload.close()


UploadDep = Annotated[Upload, Depends(get_upload)]


async def get_upload_slot(
    goal_id: GoalId, claims: AccessClaimsDep, sessionmaker: SessionmakerDep, now: Now
) -> UploadSlot:
    return await attachments.reserve_upload(sessionmaker, claims.user_id, goal_id, now)


# Declared after UploadDep and before OwnedGoal: body read, then intent committed, then the
# request's own connection and the goal's lock.
UploadSlotDep = Annotated[UploadSlot, Depends(get_upload_slot)]

# The one ownership check for every goal route (the hot reads, goal creation and a stage toggle
# fold the same caller check into their single statement: auth.queries.caller_is_current).
OwnedGoal = Annotated[Goal, Depends(_owned_goal(lock=True))]
ReadableGoal = Annotated[Goal, Depends(_owned_goal(lock=False))]


class GoalView:
    """Renders a goal as GET /goals/{goal_id} shows it, inside the current transaction: what a
    write route returns after its change."""

    def __init__(
        self, session: AsyncSession, storage: Storage, settings: Settings, caller: AccessClaims
    ) -> None:
        self._session = session
        self._storage = storage
        self._url_ttl = settings.attachment_url_ttl_seconds
        self._caller = caller

    async def payload(self, goal_id: uuid.UUID) -> dict[str, Any]:
        return await queries.get_goal(
            self._session, self._storage, self._caller, goal_id, url_ttl=self._url_ttl
        )

    async def __call__(self, goal_id: uuid.UUID) -> GoalOut:
        return GoalOut.model_validate(await self.payload(goal_id))

    async def response(self, goal_id: uuid.UUID, status_code: int = 200) -> Response:
        """The goal rendered straight into JSON, as GET /goals/{goal_id} renders it: the route
        declares `response_model=GoalOut` (tests/test_reads.py holds the bytes to the model)."""
        return json_response(await self.payload(goal_id), status_code=status_code)


async def get_goal_view(request: Request, session: SessionDep, claims: AccessClaimsDep) -> GoalView:
    # No check of its own: its statement folds the caller's token check in, and the routes that
    # use it hold the caller's goal (OwnedGoal), the caller (CurrentUser), or check both in their
    # own statement. An async function, not the class itself (FastAPI would build a class on a
    # worker thread), and storage and settings straight from the app: every dependency node
    # costs every write request (bench.profile).
    state = request.app.state
    return GoalView(session, state.storage, state.settings, claims)


GoalViewDep = Annotated[GoalView, Depends(get_goal_view)]
