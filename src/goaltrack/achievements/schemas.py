from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class AchievementOut(BaseModel):
    code: str
    title: str
    description: str
    icon: str
    earned: bool
    earned_at: datetime | None
    percent_of_users: float | None = Field(
        description="100 × holders / users not deleted, one decimal; null when the statistics "
        "are unavailable (see `stats_available`)."
    )


class AchievementList(BaseModel):
    items: list[AchievementOut]
    stats_available: bool = Field(
        description="false when the share of users could not be computed right now"
    )
