"""What happens to sessions, for other domains to act on (see `goaltrack.subscriptions`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoggedOut:
    """A session ended by logout; `device_token` is the phone that asked to stop its pushes."""

    user_id: uuid.UUID
    device_token: str | None
