"""The account (display name, e-mail change), settings, password change, soft and hard
deletion, and the data export request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from goaltrack.account.errors import ExportExpired, ExportInProgress, RestoreExpired
from goaltrack.account.models import DataExport
from goaltrack.account.schemas import (
    AccountUpdate,
    EmailChange,
    NotificationSchedule,
    PasswordConfirmation,
    PushToggle,
    QuietHours,
    SettingsUpdate,
)
from goaltrack.auth import identities, verification
from goaltrack.auth import service as auth
from goaltrack.auth.errors import InvalidPassword
from goaltrack.auth.models import User
from goaltrack.auth.oauth import IdTokenVerifier
from goaltrack.auth.schemas import TokenPair
from goaltrack.auth.security import Passwords
from goaltrack.config import Settings
from goaltrack.errors import NotFound
from goaltrack.files import service as files
from goaltrack.profile.models import UserSettings
from goaltrack.scheduling import digests, reminders
from goaltrack.worker import outbox

BUILD_EXPORT = "account.build_export"


async def get_settings_row(session: AsyncSession, user_id: uuid.UUID) -> UserSettings:
    row = await session.scalar(select(UserSettings).where(UserSettings.user_id == user_id))
    if row is None:  # created at registration; only a broken database lacks it
        raise LookupError(f"user {user_id} has no settings row")
    return row


async def lock_settings_row(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Settings writes to one account are serialised from here to the commit (If-Match)."""
    await session.execute(
        select(UserSettings.id).where(UserSettings.user_id == user_id).with_for_update()
    )


async def update_settings(
    session: AsyncSession, *, user_id: uuid.UUID, body: SettingsUpdate, now: datetime
) -> UserSettings:
    row = await get_settings_row(session, user_id)
    if body.locale is not None:
        row.locale = body.locale
    if "quiet_hours" in body.model_fields_set:
        for column, value in _quiet_hours_columns(body.quiet_hours).items():
            setattr(row, column, value)
        await outbox.wake_held(session, user_id=user_id, now=now)
    if body.timezone is not None and body.timezone != row.timezone:
        row.timezone = body.timezone
        await outbox.wake_held(session, user_id=user_id, now=now)  # quiet hours move with it
        digests.schedule_digest(row, now)
        await session.flush()
        # Same wall-clock times, new zone: every reminder's next instant moves.
        await reminders.reschedule_user(session, user_id=user_id, now=now)
    await session.flush()
    return row


def _quiet_hours_columns(hours: QuietHours | None) -> dict[str, time | None]:
    """Quiet hours as the settings row keeps them (None clears them)."""
    if hours is None:
        return {"quiet_hours_start": None, "quiet_hours_end": None}
    return {"quiet_hours_start": hours.start, "quiet_hours_end": hours.end}


async def set_notification_preferences(
    session: AsyncSession, *, user_id: uuid.UUID, body: PushToggle, now: datetime
) -> UserSettings:
    """Push on or off, quiet hours set or cleared: whichever the body gives. Pushes held by the
    old window are woken to be judged by the new one."""
    values: dict[str, object] = {}
    if body.push_enabled is not None:
        values["push_enabled"] = body.push_enabled
    if "quiet_hours" in body.model_fields_set:
        values.update(_quiet_hours_columns(body.quiet_hours))
        await outbox.wake_held(session, user_id=user_id, now=now)
    row: UserSettings | None = await session.scalar(
        update(UserSettings)
        .where(UserSettings.user_id == user_id)
        .values(values)
        .returning(UserSettings)
    )
    if row is None:
        raise LookupError(f"user {user_id} has no settings row")
    return row


async def set_notification_schedule(
    session: AsyncSession, *, user_id: uuid.UUID, body: NotificationSchedule, now: datetime
) -> UserSettings:
    row = await get_settings_row(session, user_id)
    row.notification_times = sorted(body.times)
    row.notification_frequency = body.frequency
    if body.weekday is not None:
        row.notification_weekday = body.weekday
    digests.schedule_digest(row, now)
    await session.flush()
    return row


async def _check_password(passwords: Passwords, user: User, password: str) -> None:
    if not await passwords.verify(password, user.password_hash):
        raise InvalidPassword


@dataclass(frozen=True, slots=True)
class Confirmation:
    """Who confirms a deletion: the password, else an ID token (PasswordConfirmation)."""

    body: PasswordConfirmation
    passwords: Passwords
    id_tokens: IdTokenVerifier


async def _confirm(
    session: AsyncSession, confirmation: Confirmation, user: User, now: datetime
) -> None:
    body = confirmation.body
    if body.password is not None:
        await _check_password(confirmation.passwords, user, body.password)
    else:
        assert body.id_token is not None  # the schema's rule
        await identities.confirm_identity(
            session, confirmation.id_tokens, user.id, body.id_token, now=now
        )


async def change_password(
    session: AsyncSession,
    settings: Settings,
    passwords: Passwords,
    user: User,
    *,
    current_password: str,
    new_password: str,
    now: datetime,
    user_agent: str | None,
) -> TokenPair:
    await _check_password(passwords, user, current_password)
    new_hash = await passwords.hash(new_password)
    await auth.set_password(session, user=user, new_hash=new_hash, now=now)
    pair, _ = await auth.issue_tokens(session, settings, user, now, user_agent=user_agent)
    return pair


async def update_account(session: AsyncSession, *, user: User, body: AccountUpdate) -> User:
    if "display_name" in body.model_fields_set:
        user.display_name = body.display_name
    await session.flush()
    return user


async def change_email(
    session: AsyncSession,
    settings: Settings,
    passwords: Passwords,
    *,
    user: User,
    body: EmailChange,
    now: datetime,
) -> None:
    """Confirmed with the password; the address changes when the new one is verified."""
    await _check_password(passwords, user, body.password)
    await verification.request_change(
        session, settings, user=user, new_email=body.new_email, now=now
    )


async def soft_delete(
    session: AsyncSession,
    confirmation: Confirmation,
    *,
    user: User,
    now: datetime,
    grace_days: int,
) -> datetime:
    """Sign out everywhere and hide the account; it can be restored for `grace_days`. Its Sign in
    with Apple tokens are revoked now, as Apple asks of a deletion (signing in with Apple again
    after a restore gives new ones)."""
    await _confirm(session, confirmation, user, now)
    await auth.lock_user(session, user.id)
    user.deleted_at = now
    await auth.revoke_all_sessions(session, user, now)
    await identities.revoke_provider_tokens(session, user.id, now)
    return now + timedelta(days=grace_days)


async def restore(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    passwords: Passwords,
    *,
    email: str,
    password: str,
    now: datetime,
    grace_days: int,
    user_agent: str | None,
) -> TokenPair:
    user_id = await auth.authenticate(sessionmaker, passwords, email=email, password=password)
    user = await auth.lock_user(session, user_id)
    if user is None:
        raise RestoreExpired  # purged meanwhile
    if user.deleted_at is not None:
        if user.deleted_at + timedelta(days=grace_days) <= now:
            raise RestoreExpired
        user.deleted_at = None
    pair, _ = await auth.issue_tokens(session, settings, user, now, user_agent=user_agent)
    return pair


async def hard_delete(session: AsyncSession, *, user_id: uuid.UUID, now: datetime) -> None:
    """The user row goes and every row of theirs with it (ON DELETE CASCADE); every stored file
    (attachments, exports: all under `{user_id}/`) and the revocation of any Sign in with Apple
    token not revoked yet are queued in the same transaction."""
    await identities.revoke_provider_tokens(session, user_id, now)
    await session.execute(delete(User).where(User.id == user_id))
    files.queue_prefix_deletion(session, f"{user_id}/")
    await session.flush()


async def delete_all_data(
    session: AsyncSession, confirmation: Confirmation, *, user: User, now: datetime
) -> None:
    await _confirm(session, confirmation, user, now)
    await hard_delete(session, user_id=user.id, now=now)


async def purge_expired_accounts(
    session: AsyncSession, *, now: datetime, grace_days: int, limit: int
) -> int:
    """Hard-delete one batch of accounts whose grace period is over (ix_users_deleted_at)."""
    user_ids = list(
        await session.scalars(
            select(User.id)
            .where(
                User.deleted_at.is_not(None), User.deleted_at <= now - timedelta(days=grace_days)
            )
            .order_by(User.deleted_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    for user_id in user_ids:
        await hard_delete(session, user_id=user_id, now=now)
    return len(user_ids)


def export_path(export_id: uuid.UUID) -> str:
    """The export's stable, authenticated address (the notification's `url`)."""
    return f"/account/exports/{export_id}/download"


async def ready_export(
    session: AsyncSession, *, user_id: uuid.UUID, export_id: uuid.UUID, now: datetime
) -> DataExport:
    """The caller's ready export (404 for anyone else's or one not ready; 410 once expired)."""
    export = await session.scalar(
        select(DataExport).where(DataExport.id == export_id, DataExport.user_id == user_id)
    )
    if export is None or export.status != "ready" or export.object_key is None:
        raise NotFound
    if export.expires_at is None or export.expires_at <= now:
        raise ExportExpired
    return export


async def request_export(session: AsyncSession, *, user: User, now: datetime) -> DataExport:
    pending = await session.scalar(
        select(exists().where(DataExport.user_id == user.id, DataExport.status == "pending"))
    )
    if pending:
        raise ExportInProgress
    export = DataExport(id=uuid.uuid4(), user_id=user.id, created_at=now)
    session.add(export)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent request won (uq_data_exports_user_id_pending)
        raise ExportInProgress from exc
    # Through the outbox: a build that could not be queued (the broker down) is sent again within
    # seconds of the broker's return, not when maintain_exports finds it stale.
    outbox.defer_durably(session, BUILD_EXPORT, str(export.id), now=now, user_id=user.id)
    return export
