"""Keyset pagination: an opaque cursor holding the last row's (created_at, id).

Page 1,000 costs what page 1 costs: the query seeks the index to the cursor instead of skipping rows.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

from goaltrack.errors import AppError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

T = TypeVar("T")


class InvalidCursor(AppError):
    status_code = 422
    code = "invalid_cursor"
    detail = "The cursor is not valid for this list."
    location = ("query", "cursor")


@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            created_at, _, row_id = raw.partition("|")
            instant = datetime.fromisoformat(created_at)
            if instant.tzinfo is None:
                raise InvalidCursor
            # In UTC and within range: 0001-01-01T00:00+14:00 would overflow in the driver.
            return cls(instant.astimezone(UTC), uuid.UUID(row_id))
        except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidCursor from exc


Row = TypeVar("Row", bound=Mapping[str, Any])


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    after: Cursor | None

    def params(self) -> dict[str, Any]:
        """The keyset statement's parameters: one row more than asked tells whether a next page
        exists; `after_*` when the statement is the cursor's variant."""
        params: dict[str, Any] = {"limit": self.limit + 1}
        if self.after is not None:
            params |= {"after_created_at": self.after.created_at, "after_id": self.after.id}
        return params

    def cut(self, items: list[Row]) -> tuple[list[Row], str | None]:
        """The page's rows and the cursor of the next page (None on the last)."""
        if len(items) <= self.limit:
            return items, None
        items = items[: self.limit]
        return items, Cursor(items[-1]["created_at"], items[-1]["id"]).encode()


def limit_description(maximum: int, default: int) -> str:
    """A page size's rule. Capped rather than refused (and so no `maximum` in the document): the
    cap is the server's to tune, and a generated client would enforce a published one itself,
    refusing what a later server allows; a capped page loses nothing (`next_cursor` leads on)."""
    return (
        f"Page size, 1–{maximum} (default {default}). A larger value is capped at {maximum}, "
        "not refused: the page is shorter and the cursor leads on, and the cap may change "
        "without breaking a client."
    )


async def get_page(
    limit: Annotated[
        int, Query(ge=1, description=limit_description(MAX_LIMIT, DEFAULT_LIMIT))
    ] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page:
    return Page(limit=min(limit, MAX_LIMIT), after=Cursor.decode(cursor) if cursor else None)


PageDep = Annotated[Page, Depends(get_page)]


class ListPage(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None
