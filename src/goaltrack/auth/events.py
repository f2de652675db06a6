"""What happens to sessions, for other domains to act on (see `goaltrack.subscriptions`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoggedOut:
    """A session ended by logout; `device_token` is the phone that asked to stop its pushes."""

    user_id: uuid.UUID
    device_token: str | None


@dataclass(frozen=True, slots=True)
class AccountReclaimed:
    """The owner of the account's address proved it through Sign in with Google/Apple, and the
    address had never been verified: whoever registered it first may not be its owner, so what
    they set up goes (sessions and password here; their phones' pushes in devices)."""

    user_id: uuid.UUID
