from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from goaltrack.schemas import RequestModel

Platform = Literal["android", "ios", "web"]
# FCM registration tokens are [A-Za-z0-9_:-] (~160-200 characters). The token is also a path
# segment (DELETE /devices/{token}): no "/", "%", "?", "#", and no leading "." (so never "."
# or ".."); "." inside is accepted. The column is VARCHAR(1024).
DEVICE_TOKEN_PATTERN = r"^[A-Za-z0-9_:\-][A-Za-z0-9_:.\-]*$"
DEVICE_TOKEN_MAX_LENGTH = 1024
DeviceToken = Annotated[
    str, Field(min_length=1, max_length=DEVICE_TOKEN_MAX_LENGTH, pattern=DEVICE_TOKEN_PATTERN)
]


class DeviceIn(RequestModel):
    token: DeviceToken
    platform: Platform


class DeviceOut(BaseModel):
    id: uuid.UUID
    token: str
    platform: Platform
    created_at: datetime
    last_seen_at: datetime
