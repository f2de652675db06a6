from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.account import service
from goaltrack.account.errors import ExportInProgress, RestoreExpired
from goaltrack.account.schemas import (
    AccountOut,
    DeletionScheduled,
    ExportAccepted,
    NotificationSchedule,
    PasswordChange,
    PasswordConfirmation,
    PushToggle,
    RestoreRequest,
    SettingsOut,
    SettingsUpdate,
)
from goaltrack.auth.caller import CurrentUser, get_current_user
from goaltrack.auth.dependencies import IdTokensDep, PasswordsDep
from goaltrack.auth.errors import (
    IdentityNotConfirmed,
    InvalidCredentials,
    InvalidPassword,
    ProviderNotConfigured,
    ProviderUnavailable,
)
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.auth.models import User
from goaltrack.auth.schemas import TokenPair
from goaltrack.changes import (
    current_version,
    etag,
    is_conditional,
    none_match,
    not_modified,
    require_match,
    revalidated,
)
from goaltrack.clock import Now
from goaltrack.db import SessionDep
from goaltrack.deps import SessionmakerDep, SettingsDep
from goaltrack.errors import RateLimited, error_responses
from goaltrack.ratelimit import RateLimiterDep, limit_login_attempts, limit_password_checks

router = APIRouter(
    tags=["account"], dependencies=[Depends(get_current_user)], route_class=IdempotentRoute
)
# Restoring a soft-deleted account: its tokens are revoked, so e-mail and password identify it.
public_router = APIRouter(tags=["account"], route_class=IdempotentRoute)


async def _settings_version(session: AsyncSession, user: User) -> str:
    """The settings' ETag in this transaction (the change log's row for them)."""
    return await current_version(session, "settings", user.id, user.id)


def _account_version(user: User) -> str:
    # What AccountOut shows, hashed: the account is not in the change log (GET /sync).
    shown = f"{user.id}|{user.email}|{user.created_at.isoformat()}"
    return etag(hashlib.sha256(shown.encode()).hexdigest()[:20])


@router.get("/account", response_model=AccountOut)
async def get_account(
    request: Request, user: CurrentUser, response: Response
) -> Response | AccountOut:
    current = _account_version(user)
    if none_match(request, current):
        return not_modified(current)
    response.headers.update(revalidated(current))
    return AccountOut.model_validate(user)


@router.put("/account/password", responses=error_responses(InvalidPassword, RateLimited))
async def change_password(
    body: PasswordChange,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    limiter: RateLimiterDep,
    now: Now,
) -> TokenPair:
    """A new token pair; every other session and access token of the user stops working."""
    await limit_password_checks(limiter, settings, str(user.id))
    return await service.change_password(
        session,
        settings,
        passwords,
        user,
        current_password=body.current_password,
        new_password=body.new_password,
        now=now,
        user_agent=request.headers.get("user-agent"),
    )


async def deletion_confirmation(
    body: PasswordConfirmation,
    user: CurrentUser,
    settings: SettingsDep,
    passwords: PasswordsDep,
    id_tokens: IdTokensDep,
    limiter: RateLimiterDep,
) -> service.Confirmation:
    """A deletion's confirmation (the password or an ID token), guesses limited per user."""
    await limit_password_checks(limiter, settings, str(user.id))
    return service.Confirmation(body=body, passwords=passwords, id_tokens=id_tokens)


ConfirmationDep = Annotated[service.Confirmation, Depends(deletion_confirmation)]
DELETION_ERRORS = error_responses(
    InvalidPassword, IdentityNotConfirmed, RateLimited, ProviderNotConfigured, ProviderUnavailable
)


@router.delete("/account", status_code=status.HTTP_202_ACCEPTED, responses=DELETION_ERRORS)
async def delete_account(
    confirmation: ConfirmationDep,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    now: Now,
) -> DeletionScheduled:
    """Soft delete: restorable for ACCOUNT_DELETION_GRACE_DAYS, then purged for good."""
    restore_until = await service.soft_delete(
        session,
        confirmation,
        user=user,
        now=now,
        grace_days=settings.account_deletion_grace_days,
    )
    return DeletionScheduled(restore_until=restore_until)


@router.delete("/account/data", status_code=status.HTTP_204_NO_CONTENT, responses=DELETION_ERRORS)
async def delete_all_data(
    confirmation: ConfirmationDep, user: CurrentUser, session: SessionDep, now: Now
) -> Response:
    """Immediate hard delete of the user, every row and every stored file."""
    await service.delete_all_data(session, confirmation, user=user, now=now)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/account/export",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(ExportInProgress),
)
async def request_export(user: CurrentUser, session: SessionDep, now: Now) -> ExportAccepted:
    await service.request_export(session, user=user, now=now)
    return ExportAccepted()


@public_router.post(
    "/account/restore",
    responses=error_responses(InvalidCredentials, RestoreExpired, RateLimited),
)
async def restore_account(
    body: RestoreRequest,
    request: Request,
    session: SessionDep,
    sessionmaker: SessionmakerDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    limiter: RateLimiterDep,
    now: Now,
) -> TokenPair:
    await limit_login_attempts(limiter, request, settings, body.email)
    return await service.restore(
        session,
        sessionmaker,
        settings,
        passwords,
        email=body.email,
        password=body.password,
        now=now,
        grace_days=settings.account_deletion_grace_days,
        user_agent=request.headers.get("user-agent"),
    )


# --- settings ----------------------------------------------------------------------------------


@router.get("/settings", response_model=SettingsOut)
async def get_settings(
    request: Request, user: CurrentUser, session: SessionDep, response: Response
) -> Response | SettingsOut:
    current = await _settings_version(session, user)
    if none_match(request, current):
        return not_modified(current)
    response.headers.update(revalidated(current))
    return SettingsOut.model_validate(await service.get_settings_row(session, user.id))


async def settings_precondition(request: Request, user: CurrentUser, session: SessionDep) -> None:
    """Every settings write: with `If-Match`, the row is locked and its version compared first
    (412 when stale), so that nothing changes."""
    if is_conditional(request):
        await service.lock_settings_row(session, user.id)
        require_match(request, await _settings_version(session, user))


SETTINGS_PRECONDITION = Depends(settings_precondition)


async def _with_version(
    response: Response, session: SessionDep, user: User, row: object
) -> SettingsOut:
    response.headers["ETag"] = await _settings_version(session, user)
    return SettingsOut.model_validate(row)


@router.put(
    "/settings",
    dependencies=[SETTINGS_PRECONDITION],
)
async def update_settings(
    body: SettingsUpdate, user: CurrentUser, session: SessionDep, now: Now, response: Response
) -> SettingsOut:
    """Changing the zone moves every reminder and digest to the same wall-clock time there."""
    row = await service.update_settings(session, user_id=user.id, body=body, now=now)
    return await _with_version(response, session, user, row)


@router.put(
    "/settings/notifications",
    dependencies=[SETTINGS_PRECONDITION],
)
async def set_push_enabled(
    body: PushToggle, user: CurrentUser, session: SessionDep, response: Response
) -> SettingsOut:
    row = await service.set_push_enabled(session, user_id=user.id, enabled=body.push_enabled)
    return await _with_version(response, session, user, row)


@router.put(
    "/settings/notifications/frequency",
    dependencies=[SETTINGS_PRECONDITION],
)
async def set_notification_schedule(
    body: NotificationSchedule, user: CurrentUser, session: SessionDep, now: Now, response: Response
) -> SettingsOut:
    row = await service.set_notification_schedule(session, user_id=user.id, body=body, now=now)
    return await _with_version(response, session, user, row)
