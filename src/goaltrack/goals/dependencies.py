from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path, Request, status
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.responses import Response

from goaltrack import idempotency
from goaltrack.auth.caller import AccessClaimsDep, raise_missing, require_current
from goaltrack.auth.security import AccessClaims
from goaltrack.changes import current_version, is_conditional, require_match
from goaltrack.clock import Now
from goaltrack.config import Settings
from goaltrack.db import SessionDep, statements_done
from goaltrack.deps import SessionmakerDep, SettingsDep, StorageDep
from goaltrack.goals import attachments, queries, service
from goaltrack.goals.attachments import UploadSlot
from goaltrack.goals.models import Goal
from goaltrack.reads import SessionReader, json_response
from goaltrack.storage import Storage
from goaltrack.uploads import Upload, read_upload

GoalId = Annotated[uuid.UUID, Path(description="The goal's id.")]


# Id segments never match the literal paths beside them, so that every path names one resource:
# `PUT /goals/archived` is a 405 (that path exists, for GET) rather than an update of a goal whose
# id is "archived", and likewise `DELETE /goals/{goal_id}/stages/order`. Other malformed ids still
# reach the route: a 422, as before.
class GoalIdSegment(StringConvertor):
    """`{goal_id:goal}`: any segment but `archived`."""

    regex = "(?!archived(?:/|$))[^/]+"


class StageIdSegment(StringConvertor):
    """`{stage_id:stage}`: any segment but `order`."""

    regex = "(?!order(?:/|$))[^/]+"


register_url_convertor("goal", GoalIdSegment())
register_url_convertor("stage", StageIdSegment())


async def goal_version(session: AsyncSession, goal: Goal) -> str:
    """The goal's ETag in this transaction, its writes flushed: what a write's `If-Match` is
    compared with, and what a write to one of its parts (a stage, reminder, attachment or
    check-in) answers with."""
    return await current_version(session, "goal", goal.user_id, goal.id)


async def created_in_goal(
    response: Response, session: AsyncSession, goal: Goal, location: str
) -> None:
    """A goal part's 201: the goal's new ETag, and where the new part is."""
    response.headers["ETag"] = await goal_version(session, goal)
    response.headers["Location"] = location


def _owned_goal(*, lock: bool) -> Callable[..., Awaitable[Goal]]:
    async def load(
        goal_id: GoalId, claims: AccessClaimsDep, session: SessionDep, request: Request
    ) -> Goal:
        """The caller's goal, or 404 — whether it does not exist or belongs to someone else; 401
        when the token is no longer current.

        Writes lock the row: changes to one goal (stages, progress, limits) are serialised, and
        a write's `If-Match` is compared with the version of the locked goal (412 when stale).
        One statement checks the token and the owner together; only when it finds nothing does
        a second tell a stale token (401) from a goal that is not the caller's (404)."""
        goal = await service.get_callers_goal(session, caller=claims, goal_id=goal_id, lock=lock)
        if goal is None:
            await raise_missing(session, claims)
        if lock and is_conditional(request):
            require_match(request, await goal_version(session, goal))
        return goal

    return load


# Writes to a goal that fold the ownership check into their own statement (a stage toggle) call
# it first when the request is conditional.
lock_owned_goal = _owned_goal(lock=True)


async def get_verified_claims(
    claims: AccessClaimsDep, sessionmaker: SessionmakerDep
) -> AccessClaims:
    """The access token checked against the database (version, account not deleted) on a short
    connection of its own, before an upload's body is read: a revoked token gets its 401 before
    the server reads megabytes or writes an upload intent."""
    async with sessionmaker() as session:
        await require_current(session, claims)
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


async def reserve_upload_slot(
    goal_id: GoalId, claims: AccessClaimsDep, sessionmaker: SessionmakerDep, now: Now
) -> UploadSlot:
    return await attachments.reserve_upload(sessionmaker, claims.user_id, goal_id, now)


@idempotency.claims_key
async def get_upload_slot(
    request: Request,
    upload: UploadDep,
    slot: Annotated[UploadSlot, Depends(reserve_upload_slot)],
    session: SessionDep,
    claims: AccessClaimsDep,
) -> UploadSlot:
    """The upload's slot, its intent committed, and then its Idempotency-Key claimed (see
    goaltrack.idempotency), before the goal's lock and S3. The key's content is the file's bytes
    and name: a retry's multipart boundary differs, so the raw body would never match.

    The claim comes after the intent because it takes the request's connection (its lock lives
    in the request's transaction): before it, the intent's short transaction would need a second
    connection while holding the first, and concurrent keyed uploads would wait on each other's
    (tests/test_idempotency.py). A retry answered by the claim leaves an intent for an object
    that was never stored; its sweep removes it like any other."""
    await idempotency.claim(
        request,
        session,
        owner=claims.user_id,
        content=lambda: idempotency.file_content(upload.file, upload.file_name),
        verify_owner=lambda: require_current(session, claims),
    )
    return slot


# Declared after UploadDep and before OwnedGoal: body read, then the intent committed, then the
# request's own connection (the key's claim) and the goal's lock.
UploadSlotDep = Annotated[UploadSlot, Depends(get_upload_slot)]

# The one ownership check for every goal route (the hot reads, goal creation and a stage toggle
# fold the same caller check into their single statement: auth.caller.caller_is_current).
OwnedGoal = Annotated[Goal, Depends(lock_owned_goal)]
ReadableGoal = Annotated[Goal, Depends(_owned_goal(lock=False))]


class GoalView:
    """Renders a goal as GET /goals/{goal_id} shows it, inside the current transaction: what every
    write route that answers with the goal returns after its change (`response`)."""

    def __init__(
        self, session: AsyncSession, storage: Storage, settings: Settings, caller: AccessClaims
    ) -> None:
        self._session = session
        self._reader = SessionReader(session)  # in the write's transaction: it sees the change
        self._storage = storage
        self._url_ttl = settings.attachment_url_ttl_seconds
        self._caller = caller

    async def response(self, goal_id: uuid.UUID, status_code: int = 200) -> Response:
        """The goal rendered straight into JSON, as GET /goals/{goal_id} renders it, with its new
        ETag: the route declares `response_model=GoalOut` (tests/test_reads.py holds the bytes
        to the model)."""
        await self._session.flush()  # the change log's triggers run on the flush
        goal = await queries.read_goal(self._reader, self._caller, goal_id)
        await statements_done(self._session)  # what is left is Python: the connection goes back
        payload = await goal.payload(self._storage, url_ttl=self._url_ttl)
        headers = {"ETag": goal.version}
        if status_code == status.HTTP_201_CREATED:
            headers["Location"] = f"/goals/{goal_id}"
        return json_response(payload, status_code=status_code, headers=headers)


async def get_goal_view(
    session: SessionDep, storage: StorageDep, settings: SettingsDep, claims: AccessClaimsDep
) -> GoalView:
    # No check of its own: its statement folds the caller's token check in, and the routes that
    # use it hold the caller's goal (OwnedGoal), the caller (CurrentUser), or check both in their
    # own statement. An async function, not the class itself (FastAPI would build a class on a
    # worker thread).
    return GoalView(session, storage, settings, claims)


GoalViewDep = Annotated[GoalView, Depends(get_goal_view)]
