from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from goaltrack.auth.caller import AccessClaimsDep, get_access_claims
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.clock import utcnow
from goaltrack.errors import error_responses
from goaltrack.pagination import limit_description
from goaltrack.reads import json_response
from goaltrack.sync import service
from goaltrack.sync.errors import InvalidSyncCursor, SyncCursorExpired
from goaltrack.sync.schemas import SyncPage

router = APIRouter(
    tags=["sync"], dependencies=[Depends(get_access_claims)], route_class=IdempotentRoute
)


@router.get(
    "/sync",
    response_model=SyncPage,
    responses=error_responses(InvalidSyncCursor, SyncCursorExpired),
)
async def changes(
    request: Request,
    caller: AccessClaimsDep,
    cursor: Annotated[
        str | None,
        Query(max_length=512, description="The `cursor` of the previous answer; none at first."),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, description=limit_description(service.MAX_LIMIT, service.DEFAULT_LIMIT))
    ] = service.DEFAULT_LIMIT,
) -> Response:
    """Without a cursor: the caller's whole state, page by page. With one: every change committed
    after it, each object in its latest state, deletions as tombstones. Follow `cursor` while
    `has_more`; a client that keeps syncing ends with exactly the server's state."""
    # The app's objects straight from its state, not as five more dependencies: an idle sync is
    # what a phone sends most, and each dependency node costs every request (bench/).
    state = request.app.state
    settings = state.settings
    return json_response(
        await service.read_changes(
            state.reader,
            state.storage,
            state.redis,
            state.sessionmaker,
            caller,
            cursor=cursor,
            limit=min(limit, service.MAX_LIMIT),
            now=utcnow(),
            tombstone_days=settings.sync_tombstone_days,
            url_ttl=settings.attachment_url_ttl_seconds,
        )
    )
