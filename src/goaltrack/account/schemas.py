from __future__ import annotations

import uuid
import zoneinfo
from datetime import datetime
from functools import cache
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from goaltrack.schemas import ResponseModel

Locale = Literal["en", "ru"]
Frequency = Literal["daily", "weekly", "off"]


@cache
def _available_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _check_zone(value: str) -> str:
    if value not in _available_zones():
        raise ValueError("unknown IANA time zone")
    return value


TimeZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_check_zone)]


class AccountOut(ResponseModel):
    id: uuid.UUID
    email: str
    created_at: datetime
