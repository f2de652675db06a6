"""JSON text written by PostgreSQL, byte for byte as our responses write it (orjson, as the
response models serialise: compact, UTF-8, UTC as `Z`).

A hot list's rows arrive already rendered: the statement selects each row's members as one text
column and the route sends it on as an `orjson.Fragment`, so no value is decoded into a Python
object only to be encoded again. What PostgreSQL writes is held to the response model byte for
byte by tests/test_reads.py (escaped text, timestamps with and without microseconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Text, case, cast, func, literal_column
from sqlalchemy.dialects.postgresql import JSONB


def _text(constant: str) -> ColumnElement[str]:
    """A constant inlined in the statement (our own member names: no quote to escape)."""
    if "'" in constant:
        raise ValueError(f"not a constant to inline: {constant!r}")
    return literal_column(f"'{constant}'", Text)


NULL = _text("null")


def instant(column: ColumnElement[Any]) -> ColumnElement[str]:
    """A timestamptz as orjson writes a UTC datetime: its microseconds only when it has any."""
    utc = func.timezone(_text("UTC"), column)
    fraction = case(
        (func.date_trunc(_text("second"), column) == column, _text("")),
        else_=func.to_char(utc, _text(".US")),
    )
    seconds = func.to_char(utc, _text('YYYY-MM-DD"T"HH24:MI:SS'))
    return func.coalesce(_text('"') + seconds + fraction + _text('Z"'), NULL)


def value(column: ColumnElement[Any]) -> ColumnElement[str]:
    """A text, number, boolean, date or uuid (PostgreSQL escapes a string as orjson does), or a
    timestamp (`instant`)."""
    if isinstance(column.type, DateTime):
        return instant(column)
    if isinstance(column.type, JSONB):
        raise TypeError("jsonb is written with spaces: render it in Python")
    return func.coalesce(cast(func.to_json(column), Text), NULL)


def object_head(members: Mapping[str, ColumnElement[Any]]) -> ColumnElement[str]:
    """`{"name":value,...` of `members`, in their order, left open: the caller may add members
    before it closes the object with `}`."""
    text: ColumnElement[str] = _text("{")
    for index, (name, column) in enumerate(members.items()):
        text = text + _text(f'{"," if index else ""}"{name}":') + value(column)
    return text
