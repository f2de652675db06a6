"""Secrets never reach logs: a log filter that blanks tokens in URLs (the reset link's
`?token=...`) in any record it sees, installed on uvicorn's access and error loggers."""

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


def install() -> None:
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactTokens) for existing in logger.filters):
            logger.addFilter(RedactTokens())
