from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from goaltrack.auth.caller import AccessClaimsDep, CurrentUser, get_access_claims
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.clock import Now
from goaltrack.db import SessionDep
from goaltrack.deps import ReaderDep
from goaltrack.errors import NotFound, error_responses
from goaltrack.hotpath import hot
from goaltrack.notifications import queries, service, snoozes
from goaltrack.notifications.errors import NotSnoozable
from goaltrack.notifications.schemas import (
    NOTIFICATION,
    NotificationOut,
    NotificationPage,
    ReadAllResult,
    SnoozeAccepted,
    SnoozeRequest,
)
from goaltrack.pagination import InvalidCursor, PageDep
from goaltrack.reads import json_response

router = APIRouter(
    prefix="/notifications",
    tags=["notifications"],
    dependencies=[Depends(get_access_claims)],
    route_class=IdempotentRoute,
)

NotificationId = Annotated[uuid.UUID, Path(description="The notification's id.")]


@router.get("", response_model=NotificationPage, responses=error_responses(InvalidCursor))
@hot
async def list_notifications(caller: AccessClaimsDep, page: PageDep, reader: ReaderDep) -> Response:
    """Newest first, 20 a page, with the caller's unread count."""
    # Its items are JSON already (goaltrack.jsontext): a Response, which no path validates again.
    return json_response(await queries.feed(reader, caller, page))


@router.put("/read-all")
async def read_all(user: CurrentUser, session: SessionDep) -> ReadAllResult:
    return ReadAllResult(updated=await service.mark_all_read(session, user_id=user.id))


@router.put("/{notification_id}/read", responses=error_responses(NotFound))
async def read_one(
    notification_id: NotificationId, user: CurrentUser, session: SessionDep
) -> NotificationOut:
    notification = await service.mark_read(
        session, user_id=user.id, notification_id=notification_id
    )
    return NOTIFICATION.validate_python(notification, from_attributes=True)


@router.post(
    "/{notification_id}/snooze",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(NotFound, NotSnoozable),
)
async def snooze(
    notification_id: NotificationId,
    body: SnoozeRequest,
    user: CurrentUser,
    session: SessionDep,
    now: Now,
) -> SnoozeAccepted:
    """A reminder comes again, once, `minutes` from now: a new feed row and its push (which waits
    out quiet hours). Snoozing it again before then moves that time. 409 `not_snoozable` for
    another kind of notification, or a goal no longer in progress."""
    due_at = await snoozes.snooze(
        session, user_id=user.id, notification_id=notification_id, minutes=body.minutes, now=now
    )
    return SnoozeAccepted(due_at=due_at)
