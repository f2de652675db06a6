"""JSON text written by PostgreSQL, byte for byte as our responses write it (orjson, as the
response models serialise: compact, UTF-8, UTC as `Z`).

A hot list's rows arrive already rendered: the statement selects each row's members as one text
column and the route sends it on as an `orjson.Fragment`, so no value is decoded into a Python
object only to be encoded again. What PostgreSQL writes is held to the response model byte for
byte by tests/test_reads.py (escaped text, timestamps with and without microseconds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Text, case, cast, func, literal_column
from sqlalchemy.dialects.postgresql import JSONB


def constant(text: str) -> ColumnElement[str]:
    """Text inlined in the statement (our own member names and punctuation: no quote to escape),
    not sent as one more parameter."""
    if "'" in text:
        raise ValueError(f"not a constant to inline: {text!r}")
    return literal_column(f"'{text}'", Text)


NULL = constant("null")


def instant(column: ColumnElement[Any]) -> ColumnElement[str]:
    """A timestamptz as orjson writes a UTC datetime: its microseconds only when it has any."""
    utc = func.timezone(constant("UTC"), column)
    fraction = case(
        (func.date_trunc(constant("second"), column) == column, constant("")),
        else_=func.to_char(utc, constant(".US")),
    )
    seconds = func.to_char(utc, constant('YYYY-MM-DD"T"HH24:MI:SS'))
    return func.coalesce(constant('"') + seconds + fraction + constant('Z"'), NULL)


def value(column: ColumnElement[Any]) -> ColumnElement[str]:
    """A text, number, boolean, date or uuid (PostgreSQL escapes a string as orjson does), or a
    timestamp (`instant`)."""
    if isinstance(column.type, DateTime):
        return instant(column)
    if isinstance(column.type, JSONB):
        raise TypeError("jsonb's own text has spaces: write its members with jsonb_members")
    return func.coalesce(cast(func.to_json(column), Text), NULL)


def jsonb_members(column: ColumnElement[Any], names: Iterable[str]) -> ColumnElement[str]:
    """`{"name":value,...}`: the members `names` of a jsonb object, in that order (a model's: jsonb
    keeps its keys shortest first), each a scalar as jsonb writes it (a string escaped as orjson
    escapes it), a missing one `null`. jsonb's own text of the object would have spaces; a member
    holding an object or an array would still have them (tests/test_notifications.py keeps a
    notification's `data` to scalars)."""
    text = constant("{")
    for index, name in enumerate(names):
        member = cast(column.op("->")(constant(name)), Text)
        text = text + constant(f'{"," if index else ""}"{name}":') + func.coalesce(member, NULL)
    return text + constant("}")


def members(columns: Mapping[str, ColumnElement[Any]]) -> ColumnElement[str]:
    """`"name":value,...` of `columns`, in their order, without braces: the caller opens and
    closes the object, and may put members of its own around these."""
    text: ColumnElement[str] | None = None
    for name, column in columns.items():
        if text is None:
            text = constant(f'"{name}":') + value(column)
        else:
            text = text + constant(f',"{name}":') + value(column)
    if text is None:
        raise ValueError("no members")
    return text


def object_head(columns: Mapping[str, ColumnElement[Any]]) -> ColumnElement[str]:
    """`{"name":value,...` of `columns`, left open: the caller may add members before it closes
    the object with `}`."""
    return constant("{") + members(columns)
