"""The base of the fake HTTP servers (FCM, the AI API): a stdlib `ThreadingHTTPServer` on a free
port of 127.0.0.1 in a daemon thread, so it works whatever event loop (or none) the code under test
uses: the API, a Celery worker thread, a CLI. A subclass answers `handle(path, headers, body)`
(POST) and `handle_get(path, headers)`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from helpers import wait_until

# (status, body, headers), or None: close the connection without an answer.
Answer = tuple[int, bytes, dict[str, str]] | None


class FakeHttpServer:
    name = "fake-http"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handle(self, path: str, headers: Any, body: bytes) -> Answer:
        """Answer one POST (runs on a handler thread)."""
        raise NotImplementedError

    def handle_get(self, path: str, headers: Any) -> Answer:
        """Answer one GET (runs on a handler thread); none by default."""
        return 404, b"", {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Any:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as httpx uses it with the real servers
            # Headers and body go out in two writes: with Nagle each answer would wait 40 ms
            # for the client's delayed ACK.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._send(fake.handle(self.path, self.headers, self.rfile.read(length)))

            def do_GET(self) -> None:
                self._send(fake.handle_get(self.path, self.headers))

            def _send(self, answer: Answer) -> None:
                if answer is None:
                    self.close_connection = True
                    return
                status, data, headers = answer
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the tests' output stays readable

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # a burst of requests must not overflow the listen backlog

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away mid-answer is not the test's business

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    @property
    def url(self) -> str:
        assert self._server is not None, f"{type(self).__name__} is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    async def _wait_for(
        self, ready: Callable[[], bool], result: Callable[[], Any], timeout: float
    ) -> Any:
        await wait_until(ready, timeout=timeout)
        return result()
