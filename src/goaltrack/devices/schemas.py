from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from goaltrack.schemas import DeviceToken, RequestModel

Platform = Literal["android", "ios", "web"]


class DeviceIn(RequestModel):
    token: DeviceToken
    platform: Platform


class DeviceOut(BaseModel):
    id: uuid.UUID
    token: str
    platform: Platform
    created_at: datetime
    last_seen_at: datetime
