"""What this deployment offers, so that an app hides what would only meet a permanent 503 (the
AI button without an AI key, push settings without FCM) and states the limits before the user
meets them. Public and cacheable: it changes only with the configuration."""

from __future__ import annotations

from typing import Annotated, get_args

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from goaltrack.deps import SettingsDep
from goaltrack.schemas import Locale

router = APIRouter(tags=["health"])


class Limits(BaseModel):
    max_stages_per_goal: int
    max_reminders_per_goal: int
    max_upload_bytes: int
    habit_backfill_days: int
    max_goals_per_user: int
    max_stored_bytes_per_user: int


class Capabilities(BaseModel):
    ai: bool = Field(description="AI stage splits are configured (POST /goals/{id}/ai-sync).")
    push: bool = Field(description="Push notifications are configured (FCM).")
    locales: Annotated[list[str], Field(description="The values settings.locale takes.")]
    limits: Limits


@router.get("/capabilities")
async def get_capabilities(settings: SettingsDep, response: Response) -> Capabilities:
    response.headers["Cache-Control"] = "public, max-age=300"
    return Capabilities(
        ai=bool(settings.ai_api_key.get_secret_value()),
        push=settings.fcm_credentials_file is not None,
        locales=list(get_args(Locale)),
        limits=Limits(
            max_stages_per_goal=settings.max_stages_per_goal,
            max_reminders_per_goal=settings.max_reminders_per_goal,
            max_upload_bytes=settings.max_upload_bytes,
            habit_backfill_days=settings.habit_backfill_days,
            max_goals_per_user=settings.max_goals_per_user,
            max_stored_bytes_per_user=settings.max_stored_bytes_per_user,
        ),
    )
