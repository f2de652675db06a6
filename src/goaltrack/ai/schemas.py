from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from goaltrack.ai.client import MAX_STAGES, MIN_STAGES
from goaltrack.schemas import RequestModel, StrictInt


class AiSyncRequest(RequestModel):
    max_stages: StrictInt | None = Field(
        default=None, ge=MIN_STAGES, le=MAX_STAGES, description="At most this many stages (3-10)."
    )


class AiSyncAccepted(BaseModel):
    status: Literal["pending"] = "pending"
    detail: str = "Stages are being generated"
