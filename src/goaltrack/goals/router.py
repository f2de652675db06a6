from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import RedirectResponse

from goaltrack.auth.caller import AccessClaimsDep, get_access_claims
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.auth.security import AccessClaims
from goaltrack.changes import (
    is_conditional,
    none_match,
    not_modified,
    revalidated,
)
from goaltrack.clock import Now
from goaltrack.db import SessionDep
from goaltrack.deps import ReaderDep, SettingsDep, StorageDep
from goaltrack.errors import NotFound, error_responses
from goaltrack.goals import attachments, checkins, queries, service
from goaltrack.goals.dependencies import (
    GoalId,
    GoalViewDep,
    OwnedGoal,
    ReadableGoal,
    UploadDep,
    UploadSlotDep,
    created_in_goal,
    goal_version,
    lock_owned_goal,
)
from goaltrack.goals.errors import (
    AlreadyCheckedIn,
    AttachmentLimit,
    CalendarRangeInvalid,
    CheckinDateOutOfRange,
    GoalQuota,
    InvalidStageOrder,
    NotAHabit,
    StageLimit,
    StorageQuota,
)
from goaltrack.goals.schemas import (
    Attachment,
    Checkin,
    CheckinCreate,
    CheckinList,
    GoalCreate,
    GoalOut,
    GoalSummary,
    GoalUpdate,
    Stage,
    StageCreate,
    StageOrder,
    StageUpdate,
)
from goaltrack.hotpath import hot
from goaltrack.pagination import InvalidCursor, ListPage, Page, PageDep
from goaltrack.reads import PoolReader, json_response
from goaltrack.storage import StorageUnavailable
from goaltrack.uploads import FileTooLarge, InvalidUpload, UnsupportedFileType

router = APIRouter(
    prefix="/goals",
    tags=["goals"],
    # The token is checked before anything else runs (an upload is not read for a stranger).
    dependencies=[Depends(get_access_claims)],
    route_class=IdempotentRoute,
)

NO_CONTENT = status.HTTP_204_NO_CONTENT
# Every route under /goals/{goal_id} answers 404 for a goal that is not the caller's.
NOT_FOUND = error_responses(NotFound)


# The hot reads (`@hot`: goaltrack.hotpath) return their rows as the response model lays them out;
# the hot writes (a goal created, a stage toggled) their goal rendered (GoalView).
async def _goal_list(
    request: Request, reader: PoolReader, caller: AccessClaims, page: Page, *, archived: bool
) -> Response:
    # A conditional request compares the version alone, before any row is read or rendered.
    if "if-none-match" in request.headers:
        current = await queries.goals_version(reader, caller)
        if none_match(request, current):
            return not_modified(current)
    body, current = await queries.list_goals(reader, caller, archived=archived, page=page)
    # Its items are JSON already (goaltrack.jsontext): a Response, which no path validates again.
    return json_response(body, headers=revalidated(current))


@router.get("", response_model=ListPage[GoalSummary], responses=error_responses(InvalidCursor))
@hot
async def list_goals(
    request: Request, reader: ReaderDep, caller: AccessClaimsDep, page: PageDep
) -> Response:
    """Active goals, newest first."""
    return await _goal_list(request, reader, caller, page, archived=False)


@router.get(
    "/archived", response_model=ListPage[GoalSummary], responses=error_responses(InvalidCursor)
)
@hot
async def list_archived_goals(
    request: Request, reader: ReaderDep, caller: AccessClaimsDep, page: PageDep
) -> Response:
    """Archived goals, newest first."""
    return await _goal_list(request, reader, caller, page, archived=True)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=GoalOut,
    # A reminder that waits for the day not done, on a plain goal; more stages than allowed.
    responses=error_responses(NotAHabit, StageLimit, GoalQuota),
)
@hot
async def create_goal(
    body: GoalCreate,
    caller: AccessClaimsDep,
    session: SessionDep,
    settings: SettingsDep,
    view: GoalViewDep,
    now: Now,
) -> Response:
    goal_id = await service.create_goal(session, settings, caller=caller, body=body, now=now)
    return await view.response(goal_id, status_code=status.HTTP_201_CREATED)


@router.get("/{goal_id:goal}", response_model=GoalOut, responses=NOT_FOUND)
@hot
async def get_goal(
    goal_id: GoalId,
    request: Request,
    response: Response,
    reader: ReaderDep,
    storage: StorageDep,
    settings: SettingsDep,
    caller: AccessClaimsDep,
) -> Any:
    if "if-none-match" in request.headers:
        current = await queries.goal_version(reader, caller, goal_id)
        if none_match(request, current):
            return not_modified(current)
    body, current = await queries.get_goal(
        reader, storage, caller, goal_id, url_ttl=settings.attachment_url_ttl_seconds
    )
    response.headers.update(revalidated(current))
    return body


@router.put("/{goal_id:goal}", response_model=GoalOut, responses=NOT_FOUND)
async def update_goal(
    body: GoalUpdate, goal: OwnedGoal, session: SessionDep, view: GoalViewDep, now: Now
) -> Response:
    await service.update_goal(session, goal=goal, body=body, now=now)
    return await view.response(goal.id)


@router.put("/{goal_id:goal}/archive", response_model=GoalOut, responses=NOT_FOUND)
async def archive_goal(
    goal: OwnedGoal, session: SessionDep, view: GoalViewDep, now: Now
) -> Response:
    await service.set_archived(session, goal=goal, archived=True, now=now)
    return await view.response(goal.id)


@router.put("/{goal_id:goal}/unarchive", response_model=GoalOut, responses=NOT_FOUND)
async def unarchive_goal(
    goal: OwnedGoal, session: SessionDep, view: GoalViewDep, now: Now
) -> Response:
    await service.set_archived(session, goal=goal, archived=False, now=now)
    return await view.response(goal.id)


@router.delete("/{goal_id:goal}", status_code=NO_CONTENT, responses=NOT_FOUND)
async def delete_goal(goal: OwnedGoal, session: SessionDep) -> Response:
    await service.delete_goal(session, goal=goal)
    return Response(status_code=NO_CONTENT)


# --- stages ------------------------------------------------------------------------------------


@router.post(
    "/{goal_id:goal}/stages",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(NotFound, StageLimit),
)
async def add_stage(
    body: StageCreate,
    goal: OwnedGoal,
    session: SessionDep,
    settings: SettingsDep,
    now: Now,
    response: Response,
) -> Stage:
    stage = await service.add_stage(session, settings, goal=goal, body=body, now=now)
    await created_in_goal(response, session, goal, f"/goals/{goal.id}/stages/{stage.id}")
    return Stage.model_validate(stage)


@router.put(
    "/{goal_id:goal}/stages/order",
    response_model=GoalOut,
    responses=error_responses(NotFound, InvalidStageOrder),
)
async def reorder_stages(
    body: StageOrder, goal: OwnedGoal, session: SessionDep, view: GoalViewDep, now: Now
) -> Response:
    await service.reorder_stages(session, goal=goal, body=body, now=now)
    return await view.response(goal.id)


@router.put("/{goal_id:goal}/stages/{stage_id:stage}", responses=NOT_FOUND)
async def update_stage(
    stage_id: uuid.UUID,
    body: StageUpdate,
    goal: OwnedGoal,
    session: SessionDep,
    now: Now,
    response: Response,
) -> Stage:
    stage = await service.update_stage(session, goal=goal, stage_id=stage_id, body=body, now=now)
    response.headers["ETag"] = await goal_version(session, goal)
    return Stage.model_validate(stage)


@router.delete(
    "/{goal_id:goal}/stages/{stage_id:stage}", status_code=NO_CONTENT, responses=NOT_FOUND
)
async def delete_stage(
    stage_id: uuid.UUID, goal: OwnedGoal, session: SessionDep, now: Now
) -> Response:
    await service.delete_stage(session, goal=goal, stage_id=stage_id, now=now)
    return Response(status_code=NO_CONTENT)


StageToggle = Callable[[bool], Awaitable[Response]]


async def get_stage_toggle(
    goal_id: GoalId,
    stage_id: uuid.UUID,
    request: Request,
    caller: AccessClaimsDep,
    session: SessionDep,
    view: GoalViewDep,
    now: Now,
) -> StageToggle:
    """Completes or reopens the stage, then renders its goal. The token and the owner are
    checked inside the toggle's one statement (service.SET_STAGE), as the hot reads do, rather
    than through OwnedGoal — unless the request is conditional (`If-Match`): then the goal is
    locked and its version compared first, as for every other write to a goal."""

    async def toggle(completed: bool) -> Response:
        if is_conditional(request):
            await lock_owned_goal(goal_id, caller, session, request)
        await service.set_stage_completed(
            session, caller=caller, goal_id=goal_id, stage_id=stage_id, completed=completed, now=now
        )
        return await view.response(goal_id)

    return toggle


StageToggleDep = Annotated[StageToggle, Depends(get_stage_toggle)]


@router.put(
    "/{goal_id:goal}/stages/{stage_id:stage}/complete", response_model=GoalOut, responses=NOT_FOUND
)
@hot
async def complete_stage(toggle: StageToggleDep) -> Response:
    return await toggle(True)


@router.put(
    "/{goal_id:goal}/stages/{stage_id:stage}/uncomplete",
    response_model=GoalOut,
    responses=NOT_FOUND,
)
@hot
async def uncomplete_stage(toggle: StageToggleDep) -> Response:
    return await toggle(False)


# --- check-ins (habits) -------------------------------------------------------------------------

CHECKIN_ERRORS = error_responses(NotFound, NotAHabit)


@router.post(
    "/{goal_id:goal}/checkins",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(NotFound, NotAHabit, AlreadyCheckedIn, CheckinDateOutOfRange),
)
async def add_checkin(
    body: CheckinCreate,
    goal: OwnedGoal,
    session: SessionDep,
    settings: SettingsDep,
    now: Now,
    response: Response,
) -> Checkin:
    """A habit done on a local date: today in the user's zone unless `date` says which of the
    last HABIT_BACKFILL_DAYS."""
    checkin = await checkins.add_checkin(session, settings, goal=goal, body=body, now=now)
    await created_in_goal(response, session, goal, f"/goals/{goal.id}/checkins/{checkin.date}")
    return Checkin.model_validate(checkin)


@router.get(
    "/{goal_id:goal}/checkins", responses=error_responses(NotFound, NotAHabit, CalendarRangeInvalid)
)
async def list_checkins(
    goal: ReadableGoal,
    session: SessionDep,
    now: Now,
    start: Annotated[
        date | None,
        Query(alias="from", description="The first local date (default: `to` - 29 days)."),
    ] = None,
    end: Annotated[
        date | None,
        Query(
            alias="to",
            description="The last local date (default: today, or the latest check-in's date when "
            "that is later: the user's local date went back, flown east across the date line).",
        ),
    ] = None,
) -> CheckinList:
    """The calendar: the habit's check-ins between two local dates (at most 366 days)."""
    if end is None:
        today = await checkins.local_today(session, goal, now)
        end = max(today, goal.checkin_mask_end or today)
    start = start or end - timedelta(days=29)
    if start > end or (end - start).days >= checkins.CALENDAR_MAX_DAYS:
        raise CalendarRangeInvalid
    items = await checkins.list_checkins(session, goal=goal, start=start, end=end)
    return CheckinList(items=[Checkin.model_validate(item) for item in items])


@router.delete("/{goal_id:goal}/checkins/{day}", status_code=NO_CONTENT, responses=CHECKIN_ERRORS)
async def delete_checkin(day: date, goal: OwnedGoal, session: SessionDep, now: Now) -> Response:
    """Undo the check-in of that local date."""
    await checkins.remove_checkin(session, goal=goal, day=day, now=now)
    return Response(status_code=NO_CONTENT)


# --- attachments -------------------------------------------------------------------------------


@router.post(
    "/{goal_id:goal}/attachments",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(
        NotFound,
        FileTooLarge,
        UnsupportedFileType,
        InvalidUpload,
        AttachmentLimit,
        StorageQuota,
        StorageUnavailable,
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def add_attachment(
    upload: UploadDep,
    slot: UploadSlotDep,
    goal: OwnedGoal,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    now: Now,
    response: Response,
) -> Attachment:
    attachment = await attachments.add_attachment(
        session, storage, settings, goal, upload, slot, now
    )
    await created_in_goal(
        response, session, goal, f"/goals/{goal.id}/attachments/{attachment.id}/content"
    )
    return Attachment.model_validate(
        await queries.attachment_out(
            storage, attachments.fields(attachment), url_ttl=settings.attachment_url_ttl_seconds
        )
    )


@router.get("/{goal_id:goal}/attachments", responses=NOT_FOUND)
async def list_attachments(
    goal: ReadableGoal, session: SessionDep, storage: StorageDep, settings: SettingsDep
) -> ListPage[Attachment]:
    """All of the goal's attachments, oldest first, in one page (`next_cursor` is always null):
    a goal holds a bounded number of them (`attachment_limit` beyond)."""
    items = [
        Attachment.model_validate(
            await queries.attachment_out(
                storage, attachments.fields(row), url_ttl=settings.attachment_url_ttl_seconds
            )
        )
        for row in await attachments.list_attachments(session, goal)
    ]
    return ListPage[Attachment](items=items, next_cursor=None)


@router.get(
    "/{goal_id:goal}/attachments/{attachment_id}/content",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    responses={
        status.HTTP_302_FOUND: {
            "description": "To a fresh presigned download URL.",
            "headers": {
                "Location": {"description": "The presigned URL.", "schema": {"type": "string"}}
            },
        },
        **NOT_FOUND,
    },
)
async def get_attachment_content(
    attachment_id: uuid.UUID,
    goal: ReadableGoal,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> RedirectResponse:
    """A redirect to a fresh presigned download URL: the attachment's stable address
    (`content_url`), which an image cache can key on."""
    attachment = await attachments.get_attachment(session, goal, attachment_id)
    item = await queries.attachment_out(
        storage, attachments.fields(attachment), url_ttl=settings.attachment_url_ttl_seconds
    )
    # Not cached by anyone: the URL it points to expires.
    return RedirectResponse(
        item["url"],
        status_code=status.HTTP_302_FOUND,
        headers={"Cache-Control": "private, no-store"},
    )


@router.delete(
    "/{goal_id:goal}/attachments/{attachment_id}", status_code=NO_CONTENT, responses=NOT_FOUND
)
async def delete_attachment(
    attachment_id: uuid.UUID, goal: OwnedGoal, session: SessionDep
) -> Response:
    await attachments.delete_attachment(session, goal, attachment_id)
    return Response(status_code=NO_CONTENT)
