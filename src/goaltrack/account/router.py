from __future__ import annotations

import hashlib
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.account import service
from goaltrack.account.errors import ExportExpired, ExportInProgress, RestoreExpired
from goaltrack.account.schemas import (
    AccountOut,
    AccountUpdate,
    DeletionScheduled,
    EmailChange,
    ExportAccepted,
    NotificationSchedule,
    PasswordChange,
    PasswordConfirmation,
    PushToggle,
    RestoreRequest,
    SettingsOut,
    SettingsUpdate,
)
from goaltrack.auth import verification
from goaltrack.auth.caller import (
    CurrentUser,
    get_access_claims,
    get_current_user,
    require_current,
)
from goaltrack.auth.dependencies import IdTokensDep, PasswordsDep
from goaltrack.auth.errors import (
    EmailTaken,
    IdentityNotConfirmed,
    InvalidCredentials,
    InvalidPassword,
    NothingToVerify,
    ProviderNotConfigured,
    ProviderUnavailable,
    VerificationInvalid,
)
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.auth.models import User
from goaltrack.auth.schemas import Accepted, TokenPair, VerifyByCode, VerifyByToken
from goaltrack.auth.service import lock_user
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
from goaltrack.deps import SessionmakerDep, SettingsDep, StorageDep
from goaltrack.errors import NotAuthenticated, NotFound, RateLimited, error_responses
from goaltrack.ratelimit import (
    RateLimiterDep,
    client_ip,
    limit_login_attempts,
    limit_password_checks,
)

router = APIRouter(
    tags=["account"], dependencies=[Depends(get_current_user)], route_class=IdempotentRoute
)
# Restoring a soft-deleted account: its tokens are revoked, so e-mail and password identify it.
public_router = APIRouter(tags=["account"], route_class=IdempotentRoute)
# Verifying an e-mail: by its link, with no token; here, not in auth, as it answers an Account.
verification_router = APIRouter(prefix="/auth", tags=["auth"], route_class=IdempotentRoute)

EMAIL_CHANGE_ACCEPTED = (
    "A link and a code were sent to the new address; it becomes the account's once verified."
)
VERIFICATION_SENT = "A new verification link and code were sent."


async def _settings_version(session: AsyncSession, user: User) -> str:
    """The settings' ETag in this transaction (the change log's row for them)."""
    return await current_version(session, "settings", user.id, user.id)


def _account_version(user: User) -> str:
    # What AccountOut shows, hashed: the account is not in the change log (GET /sync).
    shown = (
        f"{user.id}|{user.email}|{user.email_verified}|{user.display_name}|"
        f"{user.created_at.isoformat()}"
    )
    return etag(hashlib.sha256(shown.encode()).hexdigest()[:20])


def _account(response: Response, user: User) -> AccountOut:
    response.headers["ETag"] = _account_version(user)
    return AccountOut.model_validate(user)


@router.get("/account", response_model=AccountOut)
async def get_account(
    request: Request, user: CurrentUser, response: Response
) -> Response | AccountOut:
    current = _account_version(user)
    if none_match(request, current):
        return not_modified(current)
    response.headers.update(revalidated(current))
    return AccountOut.model_validate(user)


@router.put("/account")
async def update_account(
    body: AccountUpdate,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    response: Response,
) -> AccountOut:
    """The display name (used in mails and the export)."""
    if is_conditional(request):
        locked = await lock_user(session, user.id)
        assert locked is not None  # CurrentUser: the row exists
        require_match(request, _account_version(locked))
    return _account(response, await service.update_account(session, user=user, body=body))


@router.put(
    "/account/email",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(InvalidPassword, EmailTaken, RateLimited),
)
async def change_email(
    body: EmailChange,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    limiter: RateLimiterDep,
    now: Now,
) -> Accepted:
    """A link and a code go to the new address, a notice to the old one; the account moves to
    the new address when it is verified (POST /auth/verify-email), and until then the old one
    keeps working."""
    await limit_password_checks(limiter, settings, str(user.id))
    await limiter.hit("verification-mail", str(user.id), settings.verification_mail_limit)
    await service.change_email(session, settings, passwords, user=user, body=body, now=now)
    return Accepted(detail=EMAIL_CHANGE_ACCEPTED)


@router.post(
    "/account/email/verification",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(NothingToVerify, RateLimited),
)
async def resend_verification(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    limiter: RateLimiterDep,
    now: Now,
) -> Accepted:
    """A new verification mail (a new link and code; the older ones stop working)."""
    await limiter.hit("verification-mail", str(user.id), settings.verification_mail_limit)
    await verification.resend(session, settings, user=user, now=now)
    return Accepted(detail=VERIFICATION_SENT)


@verification_router.post(
    "/verify-email",
    responses=error_responses(VerificationInvalid, EmailTaken, NotAuthenticated, RateLimited),
)
async def verify_email(
    body: VerifyByToken | VerifyByCode,
    request: Request,
    session: SessionDep,
    sessionmaker: SessionmakerDep,
    settings: SettingsDep,
    limiter: RateLimiterDep,
    response: Response,
    now: Now,
) -> AccountOut:
    """Proves the address with the link's token (no bearer token needed) or with the code
    (with the bearer token of the account it was sent for)."""
    if isinstance(body, VerifyByToken):
        ip = client_ip(request)
        await limiter.hit("verify-link", ip, settings.login_ip_limit)
        user = await verification.verify_token(session, token=body.token, now=now)
    else:
        caller = await require_current(session, await get_access_claims(request, settings))
        await limiter.hit("verify-code", str(caller.id), settings.verification_code_limit)
        user = await verification.verify_code(
            session, sessionmaker, settings, user=caller, code=body.code, now=now
        )
    return _account(response, user)


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


@router.get(
    "/account/exports/{export_id}/download",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    responses={
        status.HTTP_302_FOUND: {
            "description": "To a presigned download URL that lives a few minutes.",
            "headers": {
                "Location": {"description": "The presigned URL.", "schema": {"type": "string"}}
            },
        },
        **error_responses(NotFound, ExportExpired),
    },
)
async def download_export(
    export_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    now: Now,
) -> RedirectResponse:
    """The export's stable address (the `export_ready` notification's `url`): it needs the
    caller's current token, so a logout or a password change ends it, and it redirects to a URL
    signed for ATTACHMENT_URL_TTL_SECONDS only."""
    export = await service.ready_export(session, user_id=user.id, export_id=export_id, now=now)
    assert export.object_key is not None  # ready
    assert export.completed_at is not None
    url = await storage.presigned_get(
        export.object_key,
        expires_in=settings.attachment_url_ttl_seconds,
        download_name=f"goaltrack-export-{export.completed_at.date().isoformat()}.zip",
        as_attachment=True,
    )
    return RedirectResponse(
        url, status_code=status.HTTP_302_FOUND, headers={"Cache-Control": "private, no-store"}
    )


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
    body: PushToggle, user: CurrentUser, session: SessionDep, now: Now, response: Response
) -> SettingsOut:
    """Push on or off, and quiet hours: pushes that fall in them wait for their end."""
    row = await service.set_notification_preferences(session, user_id=user.id, body=body, now=now)
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
