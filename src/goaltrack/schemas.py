"""Shared schema building blocks."""

import re
import zoneinfo
from datetime import date, time
from functools import cache
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    WithJsonSchema,
    field_validator,
)

CLOCK_TIME_PATTERN = "^([01][0-9]|2[0-3]):[0-5][0-9]$"
ISO_DATE_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# ASCII digits only: `\d` and str.isdigit() also match "٠٩" or fullwidth "０９".
_CLOCK_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _parse_clock_time(value: object) -> object:
    """Exactly "HH:MM" (24 h, ASCII digits) from clients; seconds, numbers and other formats
    are refused."""
    if isinstance(value, time):
        return value
    if isinstance(value, str) and (match := _CLOCK_TIME.fullmatch(value)):
        return time(int(match[1]), int(match[2]))
    raise ValueError('time must be "HH:MM" (24 h)')


def _parse_iso_date(value: object) -> object:
    """Exactly "YYYY-MM-DD" from clients (not a timestamp number, not the ISO week "2026-W01-1"
    or ordinal "2026-001" forms that date.fromisoformat also reads)."""
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError('date must be "YYYY-MM-DD"')


IsoDate = Annotated[
    date,
    BeforeValidator(_parse_iso_date),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date",
            "pattern": ISO_DATE_PATTERN,
            "examples": ["2027-05-01"],
        }
    ),
]
StrictFlag = Annotated[bool, Strict()]
# An integer, where `true` or `1.0` are not accepted as one.
StrictInt = Annotated[int, Strict()]

# A wall-clock time of day in the user's own time zone, "HH:MM" both ways.
ClockTime = Annotated[
    time,
    BeforeValidator(_parse_clock_time),
    PlainSerializer(lambda value: value.strftime("%H:%M"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": CLOCK_TIME_PATTERN, "examples": ["09:30"]}),
]


class RequestModel(BaseModel):
    """Request bodies: unknown or read-only fields are rejected (no mass assignment), and text
    never carries NUL characters (PostgreSQL cannot store them). Fields whose lax coercion would
    surprise (`0` as `false`, a number as a date) use the strict types below."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_characters(cls, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        return value


class ResponseModel(BaseModel):
    """Response bodies: built from ORM rows (or driver records) directly."""

    model_config = ConfigDict(from_attributes=True)


class Problem(BaseModel):
    """RFC 9457 problem details, as every error is rendered."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None  # also in the X-Request-ID header: quote it in a support request


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(Problem):
    """422: the problem with the list of what is wrong, field by field."""

    errors: list[ValidationErrorItem]


Locale = Literal["en", "ru"]


# Files in the system zoneinfo directory that are not IANA zone names: `localtime` (the host's
# zone, whatever that is), `Factory` (a "-00" placeholder), `posixrules`, and the posix/ and
# right/ copies. Legacy names that are real zones (US/Eastern, GB, EST5EDT) stay valid.
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})
_NOT_ZONE_PREFIXES = ("posix/", "right/")
# Area/Location[/Sub] (America/Argentina/Buenos_Aires, Etc/GMT+5), or one legacy word (UTC, GB-Eire).
_ZONE_NAME = re.compile(r"[A-Z][A-Za-z0-9_+\-]*(/[A-Z][A-Za-z0-9_+\-]*)*")


@cache
def _available_zones() -> frozenset[str]:
    return frozenset(
        name
        for name in zoneinfo.available_timezones()
        if name not in _NOT_ZONES
        and not name.startswith(_NOT_ZONE_PREFIXES)
        and _ZONE_NAME.fullmatch(name)
    )


def time_zone_names() -> list[str]:
    """Every zone name a request may carry, sorted (the OpenAPI document lists them)."""
    return sorted(_available_zones())


def _check_zone(value: str) -> str:
    if value not in _available_zones():
        raise ValueError("unknown IANA time zone")
    return value


TimeZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_check_zone)]


# A device's push token: registered under /devices, forgotten at logout.
# FCM registration tokens are [A-Za-z0-9_:-] (~160-200 characters). The token is also a path
# segment (DELETE /devices/{token}): no "/", "%", "?", "#", and no leading "." (so never "."
# or ".."); "." inside is accepted. The column is VARCHAR(1024).
DEVICE_TOKEN_PATTERN = r"^[A-Za-z0-9_:\-][A-Za-z0-9_:.\-]*$"
DEVICE_TOKEN_MAX_LENGTH = 1024
DeviceToken = Annotated[
    str, Field(min_length=1, max_length=DEVICE_TOKEN_MAX_LENGTH, pattern=DEVICE_TOKEN_PATTERN)
]
