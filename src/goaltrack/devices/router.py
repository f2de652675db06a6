from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Response, status

from goaltrack.auth.caller import CurrentUser, get_current_user
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.clock import Now
from goaltrack.db import SessionDep
from goaltrack.devices import service
from goaltrack.devices.schemas import DeviceIn, DeviceOut
from goaltrack.errors import NotFound, error_responses
from goaltrack.schemas import DEVICE_TOKEN_MAX_LENGTH, DEVICE_TOKEN_PATTERN

router = APIRouter(
    prefix="/devices",
    tags=["devices"],
    dependencies=[Depends(get_current_user)],
    route_class=IdempotentRoute,
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "model": DeviceOut,
            "description": "The token was known; it now belongs to the caller",
        }
    },
)
async def register_device(
    body: DeviceIn, user: CurrentUser, session: SessionDep, response: Response, now: Now
) -> DeviceOut:
    """Register an FCM token for pushes: 201 when new, 200 when known."""
    device, created = await service.register_device(
        session, user.id, body.token, body.platform, now
    )
    if created:
        response.headers["Location"] = f"/devices/{quote(body.token, safe='')}"
    else:
        response.status_code = status.HTTP_200_OK
    return device


@router.delete(
    "/{token}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(NotFound)
)
async def remove_device(
    token: Annotated[
        str,
        Path(min_length=1, max_length=DEVICE_TOKEN_MAX_LENGTH, pattern=DEVICE_TOKEN_PATTERN),
    ],
    user: CurrentUser,
    session: SessionDep,
) -> Response:
    await service.remove_device(session, user.id, token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
