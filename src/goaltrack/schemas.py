"""Shared schema building blocks."""

import re
import zoneinfo
from datetime import date, time
from functools import cache
from typing import TYPE_CHECKING, Annotated, Literal

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

from goaltrack.i18n import LOCALES

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


if TYPE_CHECKING:
    Locale = str
else:
    # One value per message catalogue (goaltrack/locales): an enum in the OpenAPI document.
    Locale = Literal[LOCALES]


# Files in the system zoneinfo directory that are not IANA zone names: `localtime` (the host's
# zone, whatever that is), `Factory` (a "-00" placeholder), `posixrules`, and the posix/ and
# right/ copies. Legacy names that are real zones (US/Eastern, GB, EST5EDT) stay valid.
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})
_NOT_ZONE_PREFIXES = ("posix/", "right/")
# Area/Location[/Sub] (America/Argentina/Buenos_Aires, Etc/GMT+5), or one legacy word (UTC, GB-Eire).
# The OpenAPI document publishes the shape; the names themselves are the tz database's.
TIME_ZONE_NAME_PATTERN = r"^[A-Z][A-Za-z0-9_+\-]*(/[A-Z][A-Za-z0-9_+\-]*)*$"
TIME_ZONE_NAME_MAX_LENGTH = 64
_ZONE_NAME = re.compile(TIME_ZONE_NAME_PATTERN.removeprefix("^").removesuffix("$"))


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
    """Every zone name a request may carry, sorted."""
    return sorted(_available_zones())


def _check_zone(value: str) -> str:
    if value not in _available_zones():
        raise ValueError("unknown IANA time zone")
    return value


TimeZoneName = Annotated[
    str, Field(min_length=1, max_length=TIME_ZONE_NAME_MAX_LENGTH), AfterValidator(_check_zone)
]


# A device's push token: registered under /devices, forgotten at logout.
# FCM registration tokens are [A-Za-z0-9_:-] (~160-200 characters). The token is also a path
# segment (DELETE /devices/{token}): no "/", "%", "?", "#", and no leading "." (so never "."
# or ".."); "." inside is accepted. The column is VARCHAR(1024).
DEVICE_TOKEN_PATTERN = r"^[A-Za-z0-9_:\-][A-Za-z0-9_:.\-]*$"
DEVICE_TOKEN_MAX_LENGTH = 1024
DeviceToken = Annotated[
    str, Field(min_length=1, max_length=DEVICE_TOKEN_MAX_LENGTH, pattern=DEVICE_TOKEN_PATTERN)
]


# --- Text rules: one definition for the validators and the OpenAPI document --------------------
# Each rule is a set of code points written out as ranges (hex, `low-high` or a single one). The
# validators match with a regex of that class, and openapi.py publishes the very same class in its
# `pattern`s, so the two cannot drift, and nothing scans the 1.1 M code points at start-up.
# The sets were computed from Python 3.11's unicodedata (Unicode 14.0, surrogates left out);
# tests/test_openapi_contract.py recomputes them from their definitions below, code point by code
# point, and prints the new table when a Python upgrade brings another Unicode version.


def _code_point_ranges(table: str) -> tuple[tuple[int, int], ...]:
    ranges = []
    for item in table.split():
        low, _, high = item.partition("-")
        ranges.append((int(low, 16), int(high or low, 16)))
    return tuple(ranges)


def character_class(ranges: tuple[tuple[int, int], ...]) -> str:
    """The inside of a regex character class holding `ranges`: `\\uXXXX` escapes in the BMP, the
    characters themselves beyond it (which ECMA-262 spells `\\u{...}` and Python `\\U...`, but
    both read as literals). Python `re` and ECMA-262 (OpenAPI's dialect) read it alike."""

    def spell(code: int) -> str:
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)

    return "".join(
        spell(low) if low == high else f"{spell(low)}-{spell(high)}" for low, high in ranges
    )


# Characters that draw nothing (a title needs one that does): whitespace (str.isspace), the
# categories Cc (controls), Cf (format characters: U+200B..U+200D, U+2060, U+FEFF, bidi marks),
# Zs, Zl, Zp (separators), Mn and Me (combining marks on their own), and the letters or symbols
# that render as blank space (Hangul fillers U+115F, U+1160, U+3164, U+FFA0; the Braille blank
# U+2800).
INVISIBLE_RANGES = _code_point_ranges(
    "0000-0020 007f-00a0 00ad 0300-036f 0483-0489 0591-05bd 05bf 05c1-05c2 05c4-05c5 05c7 "
    "0600-0605 0610-061a 061c 064b-065f 0670 06d6-06dd 06df-06e4 06e7-06e8 06ea-06ed 070f "
    "0711 0730-074a 07a6-07b0 07eb-07f3 07fd 0816-0819 081b-0823 0825-0827 0829-082d "
    "0859-085b 0890-0891 0898-089f 08ca-0902 093a 093c 0941-0948 094d 0951-0957 0962-0963 "
    "0981 09bc 09c1-09c4 09cd 09e2-09e3 09fe 0a01-0a02 0a3c 0a41-0a42 0a47-0a48 0a4b-0a4d "
    "0a51 0a70-0a71 0a75 0a81-0a82 0abc 0ac1-0ac5 0ac7-0ac8 0acd 0ae2-0ae3 0afa-0aff 0b01 "
    "0b3c 0b3f 0b41-0b44 0b4d 0b55-0b56 0b62-0b63 0b82 0bc0 0bcd 0c00 0c04 0c3c 0c3e-0c40 "
    "0c46-0c48 0c4a-0c4d 0c55-0c56 0c62-0c63 0c81 0cbc 0cbf 0cc6 0ccc-0ccd 0ce2-0ce3 "
    "0d00-0d01 0d3b-0d3c 0d41-0d44 0d4d 0d62-0d63 0d81 0dca 0dd2-0dd4 0dd6 0e31 0e34-0e3a "
    "0e47-0e4e 0eb1 0eb4-0ebc 0ec8-0ecd 0f18-0f19 0f35 0f37 0f39 0f71-0f7e 0f80-0f84 "
    "0f86-0f87 0f8d-0f97 0f99-0fbc 0fc6 102d-1030 1032-1037 1039-103a 103d-103e 1058-1059 "
    "105e-1060 1071-1074 1082 1085-1086 108d 109d 115f-1160 135d-135f 1680 1712-1714 "
    "1732-1733 1752-1753 1772-1773 17b4-17b5 17b7-17bd 17c6 17c9-17d3 17dd 180b-180f "
    "1885-1886 18a9 1920-1922 1927-1928 1932 1939-193b 1a17-1a18 1a1b 1a56 1a58-1a5e 1a60 "
    "1a62 1a65-1a6c 1a73-1a7c 1a7f 1ab0-1ace 1b00-1b03 1b34 1b36-1b3a 1b3c 1b42 1b6b-1b73 "
    "1b80-1b81 1ba2-1ba5 1ba8-1ba9 1bab-1bad 1be6 1be8-1be9 1bed 1bef-1bf1 1c2c-1c33 "
    "1c36-1c37 1cd0-1cd2 1cd4-1ce0 1ce2-1ce8 1ced 1cf4 1cf8-1cf9 1dc0-1dff 2000-200f "
    "2028-202f 205f-2064 2066-206f 20d0-20f0 2800 2cef-2cf1 2d7f 2de0-2dff 3000 302a-302d "
    "3099-309a 3164 a66f-a672 a674-a67d a69e-a69f a6f0-a6f1 a802 a806 a80b a825-a826 a82c "
    "a8c4-a8c5 a8e0-a8f1 a8ff a926-a92d a947-a951 a980-a982 a9b3 a9b6-a9b9 a9bc-a9bd a9e5 "
    "aa29-aa2e aa31-aa32 aa35-aa36 aa43 aa4c aa7c aab0 aab2-aab4 aab7-aab8 aabe-aabf aac1 "
    "aaec-aaed aaf6 abe5 abe8 abed fb1e fe00-fe0f fe20-fe2f feff ffa0 fff9-fffb 101fd 102e0 "
    "10376-1037a 10a01-10a03 10a05-10a06 10a0c-10a0f 10a38-10a3a 10a3f 10ae5-10ae6 "
    "10d24-10d27 10eab-10eac 10f46-10f50 10f82-10f85 11001 11038-11046 11070 11073-11074 "
    "1107f-11081 110b3-110b6 110b9-110ba 110bd 110c2 110cd 11100-11102 11127-1112b "
    "1112d-11134 11173 11180-11181 111b6-111be 111c9-111cc 111cf 1122f-11231 11234 "
    "11236-11237 1123e 112df 112e3-112ea 11300-11301 1133b-1133c 11340 11366-1136c "
    "11370-11374 11438-1143f 11442-11444 11446 1145e 114b3-114b8 114ba 114bf-114c0 "
    "114c2-114c3 115b2-115b5 115bc-115bd 115bf-115c0 115dc-115dd 11633-1163a 1163d "
    "1163f-11640 116ab 116ad 116b0-116b5 116b7 1171d-1171f 11722-11725 11727-1172b "
    "1182f-11837 11839-1183a 1193b-1193c 1193e 11943 119d4-119d7 119da-119db 119e0 "
    "11a01-11a0a 11a33-11a38 11a3b-11a3e 11a47 11a51-11a56 11a59-11a5b 11a8a-11a96 "
    "11a98-11a99 11c30-11c36 11c38-11c3d 11c3f 11c92-11ca7 11caa-11cb0 11cb2-11cb3 "
    "11cb5-11cb6 11d31-11d36 11d3a 11d3c-11d3d 11d3f-11d45 11d47 11d90-11d91 11d95 11d97 "
    "11ef3-11ef4 13430-13438 16af0-16af4 16b30-16b36 16f4f 16f8f-16f92 16fe4 1bc9d-1bc9e "
    "1bca0-1bca3 1cf00-1cf2d 1cf30-1cf46 1d167-1d169 1d173-1d182 1d185-1d18b 1d1aa-1d1ad "
    "1d242-1d244 1da00-1da36 1da3b-1da6c 1da75 1da84 1da9b-1da9f 1daa1-1daaf 1e000-1e006 "
    "1e008-1e018 1e01b-1e021 1e023-1e024 1e026-1e02a 1e130-1e136 1e2ae 1e2ec-1e2ef "
    "1e8d0-1e8d6 1e944-1e94a e0001 e0020-e007f e0100-e01ef "
)
# Whitespace: what str.isspace() holds for, and so what str.strip() removes.
WHITESPACE_RANGES = _code_point_ranges(
    "0009-000d 001c-0020 0085 00a0 1680 2000-200a 2028-2029 202f 205f 3000 "
)
INVISIBLE_CHARACTERS = character_class(INVISIBLE_RANGES)
WHITESPACE_CHARACTERS = character_class(WHITESPACE_RANGES)
_VISIBLE = re.compile(f"[^{INVISIBLE_CHARACTERS}]")
_NOT_WHITESPACE = re.compile(f"[^{WHITESPACE_CHARACTERS}]")


def has_visible_character(value: str) -> bool:
    """Whether `value` draws something: not empty, and not only INVISIBLE_RANGES."""
    return _VISIBLE.search(value) is not None


def not_blank(value: str) -> str:
    """A validator: at least one visible character (INVISIBLE_RANGES, which the OpenAPI document
    states too as VISIBLE_TEXT_PATTERN); the text is kept exactly as given."""
    if not has_visible_character(value):
        raise ValueError("must not be blank")
    return value


def is_blank(value: str) -> bool:
    """Whether `value` is empty or whitespace only (`not value.strip()`)."""
    return _NOT_WHITESPACE.search(value) is None
