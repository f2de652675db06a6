from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from goaltrack.schemas import RequestModel

Platform = Literal["android", "ios", "web"]
# FCM registration tokens are printable ASCII (~160-200 characters).
DEVICE_TOKEN_PATTERN = r"^[\x21-\x7e]+$"
DeviceToken = Annotated[str, Field(min_length=1, max_length=1024, pattern=DEVICE_TOKEN_PATTERN)]


class DeviceIn(RequestModel):
    token: DeviceToken
    platform: Platform


class DeviceOut(BaseModel):
    id: uuid.UUID
    token: str
    platform: Platform
    created_at: datetime
    last_seen_at: datetime
