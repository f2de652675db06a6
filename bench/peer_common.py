"""What the benchmark's two peers share: the models, schemas and statements a team writes once,
whichever way its routes run (bench/peer_template.py: sync routes on a psycopg `Session`, as the
official full-stack template does; bench/peer_async.py: async routes on an `AsyncSession`).

The ORM classes map our tables with their children as relationships (the template's models.py
declares them; ours declares none), the Pydantic schemas are the `response_model`s, and the
statements are those the routes send. Configuration comes from the environment through
`goaltrack.config.Settings`, as our API reads it.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Annotated, Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from fastapi import Depends, HTTPException, Query, status
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, ConfigDict, field_serializer
from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.orm import DeclarativeBase, Mapped, relationship, selectinload

from goaltrack.achievements import texts
from goaltrack.achievements.models import Achievement, UserAchievement
from goaltrack.auth.models import RefreshToken, User
from goaltrack.auth.security import AccessClaims, decode_access_token
from goaltrack.config import Settings
from goaltrack.goals import models as tables
from goaltrack.goals.queries import habit_fields
from goaltrack.notifications.models import Notification
from goaltrack.profile.models import UserSettings

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
DEFAULT_LOCALE = "en"
STATS_KEY = "achievements:stats"
# Raster images show in the browser; anything else is served as a download.
INLINE_CONTENT_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/heic"})

settings = Settings()
# Presigning is local computation: the client never opens a connection for it.
s3_client = boto3.client(
    "s3",
    endpoint_url=settings.s3_public_endpoint_url or settings.s3_endpoint_url,
    aws_access_key_id=settings.s3_access_key_id,
    aws_secret_access_key=settings.s3_secret_access_key.get_secret_value(),
    region_name=settings.s3_region,
    config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
)


def presigned_get_url(key: str, file_name: str, file_type: str) -> str:
    """A short-lived download URL: the stored type forced, images inline, the rest downloads."""
    disposition = "inline" if file_type in INLINE_CONTENT_TYPES else "attachment"
    params: dict[str, Any] = {
        "Bucket": settings.s3_bucket,
        "Key": key,
        "ResponseContentType": file_type,
    }
    if file_name:
        params["ResponseContentDisposition"] = (
            f"{disposition}; filename*=UTF-8''{quote(file_name, safe='')}"
        )
    elif disposition == "attachment":
        params["ResponseContentDisposition"] = disposition
    url: str = s3_client.generate_presigned_url(
        "get_object", Params=params, ExpiresIn=settings.attachment_url_ttl_seconds
    )
    return url


# --- models ------------------------------------------------------------------------------------
# The template's models.py declares a goal with its children as relationships; ours declares
# none, so the peers map their own classes onto the same tables (and use our other models as is).


class Base(DeclarativeBase):
    pass


class Stage(Base):
    __table__ = tables.GoalStage.__table__


class Attachment(Base):
    __table__ = tables.GoalAttachment.__table__

    @property
    def url(self) -> str:
        return presigned_get_url(self.object_key, self.file_name, self.file_type)

    @property
    def content_url(self) -> str:
        return f"/goals/{self.goal_id}/attachments/{self.id}/content"


class Reminder(Base):
    __table__ = tables.GoalReminder.__table__


class Goal(Base):
    __table__ = tables.Goal.__table__

    @property
    def habit(self) -> dict[str, Any]:
        # A habit's figures, as our API computes them (the template has no habits; the bench's
        # data has none, and this keeps the bodies byte for byte alike). In UTC: the peer does
        # not read the user's zone.
        habit = None
        if self.kind == "habit":
            habit = {
                "schedule": self.schedule,
                "start": self.habit_start.isoformat(),
                "run": self.streak_run,
                "run_end": self.streak_run_end and self.streak_run_end.isoformat(),
                "longest": self.streak_longest,
                "mask": self.checkin_mask,
                "mask_end": self.checkin_mask_end and self.checkin_mask_end.isoformat(),
            }
        return habit_fields({"habit": habit}, datetime.now(UTC).date())

    @property
    def streak(self) -> Any:
        return self.habit["streak"]

    @property
    def due_today(self) -> Any:
        return self.habit["due_today"]

    @property
    def done_today(self) -> Any:
        return self.habit["done_today"]

    @property
    def completion_rate_30d(self) -> Any:
        return self.habit["completion_rate_30d"]

    stages: Mapped[list[Stage]] = relationship(order_by=Stage.position)
    attachments: Mapped[list[Attachment]] = relationship(
        order_by=(Attachment.created_at, Attachment.id)
    )
    reminders: Mapped[list[Reminder]] = relationship(order_by=(Reminder.remind_time, Reminder.id))


# --- the caller ----------------------------------------------------------------------------------

reusable_oauth2 = OAuth2PasswordBearer(tokenUrl="/auth/login")
TokenDep = Annotated[str, Depends(reusable_oauth2)]


def credentials_error() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED, detail="Could not validate credentials"
    )


def token_claims(token: str) -> AccessClaims:
    """The verified token's claims (our own `decode_access_token`, with its per-token cache)."""
    claims = decode_access_token(settings, token, datetime.now(UTC))
    if claims is None:
        raise credentials_error()
    return claims


def current(user: User | None, claims: AccessClaims) -> User:
    """The token's user, still there and on the token's version."""
    if user is None or user.deleted_at is not None or user.token_version != claims.token_version:
        raise credentials_error()
    return user


def live_token(claims: AccessClaims) -> Select[Any]:
    """A live refresh token of the token's session (none: logged out, or a replayed token)."""
    return (
        select(RefreshToken)
        .where(RefreshToken.family_id == claims.session_id, RefreshToken.revoked_at.is_(None))
        .limit(1)
    )


@dataclass(frozen=True, slots=True)
class Cursor:
    """Our API's cursor: base64url (unpadded) of "<created_at isoformat>|<id>"."""

    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def get_cursor(cursor: Annotated[str | None, Query(max_length=200)] = None) -> Cursor | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, _, row_id = raw.partition("|")
        instant = datetime.fromisoformat(created_at)
        if instant.tzinfo is None:
            raise ValueError("a cursor's time must have a zone")
        return Cursor(instant.astimezone(UTC), uuid.UUID(row_id))
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError) as exc:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail="Invalid cursor"
        ) from exc


CursorDep = Annotated[Cursor | None, Depends(get_cursor)]
Limit = Annotated[int, Query(ge=1)]


def next_cursor(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """The page (one row more was fetched) and the cursor of the next one (None on the last)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, Cursor(rows[-1].created_at, rows[-1].id).encode()


# --- the routes' statements ---------------------------------------------------------------------


def goals_page(user: User, cursor: Cursor | None, limit: int) -> Select[Any]:
    statement = (
        select(Goal)
        .where(Goal.user_id == user.id, Goal.is_archived.is_(False))
        .order_by(Goal.created_at.desc(), Goal.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        statement = statement.where(
            tuple_(Goal.created_at, Goal.id) < tuple_(cursor.created_at, cursor.id)
        )
    return statement


def goal_with_children(user: User, goal_id: uuid.UUID) -> Select[Any]:
    return (
        select(Goal)
        .where(Goal.id == goal_id, Goal.user_id == user.id)
        .options(
            selectinload(Goal.stages),
            selectinload(Goal.attachments),
            selectinload(Goal.reminders),
        )
    )


def goal_not_found() -> HTTPException:
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="Goal not found")


def notifications_page(user: User, cursor: Cursor | None, limit: int) -> Select[Any]:
    statement = (
        select(Notification)
        .where(Notification.user_id == user.id)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        statement = statement.where(
            tuple_(Notification.created_at, Notification.id) < tuple_(cursor.created_at, cursor.id)
        )
    return statement


def unread_count(user: User) -> Select[Any]:
    # `NOT is_read`, as the partial index it needs is written: `is_read IS false` cannot use it
    # (a sequential scan of a 100,000-row feed, and worse in the generic plan asyncpg's prepared
    # statements switch to after five runs), which would measure a predicate, not the stack.
    return (
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user.id, ~Notification.is_read)
    )


def user_locale(user: User) -> Select[Any]:
    return select(UserSettings.locale).where(UserSettings.user_id == user.id)


CATALOGUE = select(Achievement).order_by(Achievement.position)


def earned_by(user: User) -> Select[Any]:
    return select(UserAchievement).where(UserAchievement.user_id == user.id)


def percent_of_users(stats: dict[str, Any] | None, code: str) -> float | None:
    if stats is None:
        return None
    users = int(stats["users"])
    if users == 0:
        return 0.0
    return round(100 * int(stats["holders"].get(code, 0)) / users, 1)


def achievements_body(
    achievements: Any, earned: dict[Any, datetime], locale: str | None, stats: Any
) -> dict[str, Any]:
    return {
        "items": [
            {
                "code": achievement.code,
                "title": texts.title(achievement.code, locale or DEFAULT_LOCALE),
                "description": texts.description(achievement.code, locale or DEFAULT_LOCALE),
                "icon": achievement.icon,
                "earned": achievement.id in earned,
                "earned_at": earned.get(achievement.id),
                "percent_of_users": percent_of_users(stats, achievement.code),
            }
            for achievement in achievements
        ],
        "stats_available": stats is not None,
    }


# --- schemas (the response models) -----------------------------------------------------------------------------------


class GoalPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    description: str | None
    deadline: date | None
    progress: int
    is_archived: bool
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    stage_count: int
    completed_stage_count: int
    ai_status: str
    kind: str
    schedule: dict[str, Any] | None
    streak: dict[str, int] | None
    due_today: bool | None
    done_today: bool | None
    completion_rate_30d: int | None


class GoalsPublic(BaseModel):
    items: list[GoalPublic]
    next_cursor: str | None


class StagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    description: str | None
    position: int
    is_completed: bool
    completed_at: datetime | None


class AttachmentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    file_name: str
    file_type: str
    size: int
    url: str
    content_url: str
    created_at: datetime


class ReminderPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    remind_time: time
    frequency_days: int | None
    weekdays: list[int] | None
    only_if_not_done: bool
    next_fire_at: datetime | None

    @field_serializer("remind_time")
    def _hours_minutes(self, value: time) -> str:
        return value.strftime("%H:%M")


class GoalDetailPublic(GoalPublic):
    stages: list[StagePublic]
    attachments: list[AttachmentPublic]
    reminders: list[ReminderPublic]
    ai_error: str | None


class NotificationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    type: str
    title: str
    body: str
    data: dict[str, Any]
    is_read: bool
    created_at: datetime


class NotificationsPublic(BaseModel):
    items: list[NotificationPublic]
    next_cursor: str | None
    unread_count: int


class AchievementPublic(BaseModel):
    code: str
    title: str
    description: str
    icon: str
    earned: bool
    earned_at: datetime | None
    percent_of_users: float | None


class AchievementsPublic(BaseModel):
    items: list[AchievementPublic]
    stats_available: bool
