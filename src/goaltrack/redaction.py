"""Secrets never reach logs: a filter that blanks tokens in URLs (the reset link's `?token=...`)
on uvicorn's loggers, and one that drops the DEBUG records of loggers that dump data."""

from __future__ import annotations

import logging
import re

_TOKEN_IN_QUERY = re.compile(r"((?:^|[?&])(?:token|access_token|refresh_token)=)[^&\s\"']+", re.I)


def redact(text: str) -> str:
    return _TOKEN_IN_QUERY.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class NoDebugRecords(logging.Filter):
    """For loggers whose DEBUG records carry data: SQLAlchemy logs every result row (e-mail
    addresses, password hashes, device tokens) and Celery's pool every task's arguments.
    Whatever level someone turns on, those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_FILTERS: dict[str, type[logging.Filter]] = {
    "uvicorn.access": RedactTokens,
    "uvicorn.error": RedactTokens,
    "sqlalchemy.engine": NoDebugRecords,
    "sqlalchemy.engine.Engine": NoDebugRecords,
    "celery.pool": NoDebugRecords,
}


def install() -> None:
    """Called by the API's and the worker's factories."""
    for name, kind in _FILTERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, kind) for existing in logger.filters):
            logger.addFilter(kind())
