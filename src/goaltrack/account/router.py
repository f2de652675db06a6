from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status

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
from goaltrack.auth.dependencies import PasswordsDep
from goaltrack.auth.errors import InvalidCredentials, InvalidPassword
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.auth.schemas import TokenPair
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


@router.get("/account")
async def get_account(user: CurrentUser) -> AccountOut:
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


@router.delete(
    "/account",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(InvalidPassword, RateLimited),
)
async def delete_account(
    body: PasswordConfirmation,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    limiter: RateLimiterDep,
    now: Now,
) -> DeletionScheduled:
    """Soft delete: restorable for ACCOUNT_DELETION_GRACE_DAYS, then purged for good."""
    await limit_password_checks(limiter, settings, str(user.id))
    restore_until = await service.soft_delete(
        session,
        passwords,
        user=user,
        password=body.password,
        now=now,
        grace_days=settings.account_deletion_grace_days,
    )
    return DeletionScheduled(restore_until=restore_until)


@router.delete(
    "/account/data",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(InvalidPassword, RateLimited),
)
async def delete_all_data(
    body: PasswordConfirmation,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    limiter: RateLimiterDep,
) -> Response:
    """Immediate hard delete of the user, every row and every stored file."""
    await limit_password_checks(limiter, settings, str(user.id))
    await service.delete_all_data(session, passwords, user=user, password=body.password)
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


@router.get("/settings")
async def get_settings(user: CurrentUser, session: SessionDep) -> SettingsOut:
    return SettingsOut.model_validate(await service.get_settings_row(session, user.id))


@router.put("/settings")
async def update_settings(
    body: SettingsUpdate, user: CurrentUser, session: SessionDep, now: Now
) -> SettingsOut:
    """Changing the zone moves every reminder and digest to the same wall-clock time there."""
    return SettingsOut.model_validate(
        await service.update_settings(session, user_id=user.id, body=body, now=now)
    )


@router.put("/settings/notifications")
async def set_push_enabled(body: PushToggle, user: CurrentUser, session: SessionDep) -> SettingsOut:
    return SettingsOut.model_validate(
        await service.set_push_enabled(session, user_id=user.id, enabled=body.push_enabled)
    )


@router.put("/settings/notifications/frequency")
async def set_notification_schedule(
    body: NotificationSchedule, user: CurrentUser, session: SessionDep, now: Now
) -> SettingsOut:
    return SettingsOut.model_validate(
        await service.set_notification_schedule(session, user_id=user.id, body=body, now=now)
    )
