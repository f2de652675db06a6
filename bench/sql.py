"""The SQL text of the hot read, exactly as our route sends it (compiled from the real statement).

The baseline and the EXPLAIN script use this text, so they can never drift from the app's query.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg


@cache
def _compiled(after_cursor: bool) -> tuple[str, tuple[str, ...]]:
    from goaltrack.goals.queries import GOAL_LIST_AFTER_STATEMENT, GOAL_LIST_STATEMENT

    compiled = (GOAL_LIST_AFTER_STATEMENT if after_cursor else GOAL_LIST_STATEMENT).compile(
        dialect=PGDialect_asyncpg()
    )  # type: ignore[no-untyped-call]
    names = tuple(compiled.positiontup or ())
    return str(compiled), names


def list_sql(*, after_cursor: bool = False) -> str:
    """`$n`-style SQL of GET /goals (page 1, or a page after a keyset cursor)."""
    return _compiled(after_cursor)[0]


def list_param_names(*, after_cursor: bool = False) -> tuple[str, ...]:
    """The names of the positional parameters, in `$1, $2, ...` order."""
    return _compiled(after_cursor)[1]
