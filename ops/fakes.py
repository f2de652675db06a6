"""The two outside services a production-mode run needs and this machine has not: an SMTP sink
(aiosmtpd, as in the tests) and an OpenAI-compatible chat API that answers a valid stage plan
after a short, DeepSeek-like delay. Both run in threads of the orchestrating process."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from goaltrack.dev.localstack import free_port


class SmtpSink:
    """Accepts every message (250) and counts them."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0
        self._controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received += 1
        return "250 OK"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


class FakeAi:
    """`POST /chat/completions`: a 4-6 stage plan after `delay` seconds (uniform in the range)."""

    def __init__(self, delay: tuple[float, float] = (0.5, 2.0)) -> None:
        self.delay = delay
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                fake.requests += 1
                time.sleep(random.uniform(*fake.delay))  # noqa: S311
                stages = [
                    {"title": f"Step {i}", "description": f"Do part {i} of the goal."}
                    for i in range(1, random.randint(4, 6) + 1)  # noqa: S311
                ]
                answer = {
                    "id": f"chatcmpl-ops-{time.monotonic_ns()}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", ""),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {
                                "role": "assistant",
                                "content": json.dumps({"stages": stages}),
                            },
                            "logprobs": None,
                        }
                    ],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 60, "total_tokens": 160},
                }
                data = json.dumps(answer).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="fake-ai", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
