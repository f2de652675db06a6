"""The current time, injectable: routes take `Now`, tests override `get_now` to travel in time."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends


def utcnow() -> datetime:
    return datetime.now(UTC)


async def get_now() -> datetime:
    return utcnow()


Now = Annotated[datetime, Depends(get_now)]
