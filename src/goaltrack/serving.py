"""`goaltrack serve`'s server: uvicorn, which drains before it stops.

On SIGTERM (`docker compose stop`, a rolling restart) uvicorn alone closes its listening socket
at once and then its idle keep-alive connections: a request the proxy sends on one of those in
the same instant fails (a 502 for a POST, which the proxy must not retry). So for `drain` seconds
first, readiness answers 503 (goaltrack.health.stopping) while everything is served as before;
the proxy's active health check (deploy/Caddyfile) sees it and sends nothing more; then uvicorn's
own graceful stop finishes the requests in flight. A second SIGTERM, or Ctrl-C, stops at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import uvicorn

from goaltrack import health

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: float) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.drain <= 0 or health.stopping.is_set():
            super().handle_exit(sig, frame)
            return
        health.stopping.set()
        logger.info("stopping in %.1f s; readiness answers 503 meanwhile", self.drain)
        timer = threading.Timer(self.drain, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()
