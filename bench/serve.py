"""Runs an app under test as `python -m uvicorn ARGS` does, and tells the verified-token cache's
counters on SIGUSR1: each app checks tokens with our `decode_access_token`, whose cache
(`goaltrack.auth.security.VERIFIED_TOKENS`; before it, the `lru_cache` on `_verify`) counts its
hits and misses for nothing.

    python -m bench.serve goaltrack.main:create_app --factory --port 8000 ...

On SIGUSR1 it writes `{"hits": ..., "misses": ..., "currsize": ..., "maxsize": ...}` (and the
habit figures' memo's `habit_hits` and `habit_misses`) to the file
named by BENCH_TOKEN_CACHE_FILE (written aside, then renamed: a reader never sees half of it);
`{}` where the app's source has no such cache (an older revision). The handler runs between two
Python instructions of the server's loop: apps.RunningApp.token_cache sends a request after the
signal, so that an idle loop runs it at once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType

import uvicorn.main


def _tell_token_cache(signum: int, frame: FrameType | None) -> None:
    from goaltrack.auth import security

    cache = getattr(security, "VERIFIED_TOKENS", None)
    verify = getattr(security, "_verify", None)  # an older revision's (--before)
    counters: dict[str, int] = {}
    if cache is not None:
        counters = cache.counters()
    elif hasattr(verify, "cache_info"):
        counters = verify.cache_info()._asdict()
    # The memo of the listed habits' figures (goaltrack.goals.queries.habit_members), beside it.
    from goaltrack.goals import queries

    memo = getattr(queries, "habit_members", None)
    if hasattr(memo, "cache_info"):
        info = memo.cache_info()
        counters |= {"habit_hits": info.hits, "habit_misses": info.misses}
    path = Path(os.environ["BENCH_TOKEN_CACHE_FILE"])
    aside = path.with_suffix(".writing")
    aside.write_text(json.dumps(counters))
    aside.replace(path)


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, _tell_token_cache)
    sys.argv[0] = "uvicorn"
    uvicorn.main.main()
