"""The notification feed's rows. Every event writes its row first; delivery (push) follows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.notifications.models import Notification


async def notify(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    type: str,
    title: str,
    body: str,
    data: dict[str, Any],
    now: datetime,
) -> Notification:
    notification = Notification(
        id=uuid.uuid4(),
        user_id=user_id,
        type=type,
        title=title,
        body=body,
        data=data,
        created_at=now,
    )
    session.add(notification)
    await session.flush()
    return notification
