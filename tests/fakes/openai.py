"""A fake OpenAI-compatible chat API (what DeepSeek serves), for the official `openai` SDK.

It serves `POST /chat/completions` (the SDK posts to `{base_url}/chat/completions`), records every
request body and its Authorization header, and answers from a script: `reply(content)` (a 200
chat completion), `fail(status)` (an OpenAI-style error), `hang(seconds)` (a slow answer) or
`drop()` (the connection closed without an answer), `raw(status, body)` (any body); with the script empty it answers a valid
4-stage plan. It runs a stdlib `ThreadingHTTPServer` in a daemon thread, so it works whatever
event loop (or none) the code under test uses: the API, a Celery worker thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from fakes.server import Answer, FakeHttpServer

# HTTP status -> (error type, error code), as OpenAI-compatible APIs answer them.
ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    402: ("insufficient_balance", "insufficient_balance"),
    403: ("permission_error", None),
    404: ("not_found_error", "model_not_found"),
    422: ("invalid_request_error", "invalid_parameters"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_overloaded", None),
}


def stages_json(n: int, prefix: str = "Stage") -> str:
    """The content of a valid answer: `{"stages": [...]}` with `n` stages."""
    stages = [
        {"title": f"{prefix} {i}", "description": f"Description of {prefix.lower()} {i}."}
        for i in range(1, n + 1)
    ]
    return json.dumps({"stages": stages})


DEFAULT_CONTENT = stages_json(4, "Default stage")


@dataclass(frozen=True)
class _Scripted:
    status: int = 200
    content: str | None = DEFAULT_CONTENT
    finish_reason: str = "stop"
    delay: float = 0.0
    drop: bool = False
    raw: bytes | None = None  # answered as is, with `content_type`
    content_type: str = "application/json"


class FakeOpenAI(FakeHttpServer):
    """`requests` holds the parsed JSON body of every chat completion request, in arrival order;
    `authorizations` the Authorization header sent with each."""

    name = "fake-openai"

    def __init__(self) -> None:
        super().__init__()
        self._script: deque[_Scripted] = deque()
        # Set to let the hanging handlers go (at reset and stop); replaced by a fresh one at reset.
        self._release = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.paths: list[str] = []

    def handle(self, path: str, headers: Any, body: bytes) -> Answer:
        if path.split("?")[0].rstrip("/") != "/chat/completions":
            return _answer(404, _error_body(404, f"Unknown path {path}"))
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return _answer(400, _error_body(400, "The request body must be a JSON object."))
        scripted, release = self._record(path, headers, request)
        if scripted.delay and release.wait(scripted.delay):
            return None  # released by reset/stop: the client has long given up; answer nothing
        if scripted.drop:
            return None
        if scripted.raw is not None:
            return _raw(scripted.status, scripted.raw, scripted.content_type)
        if scripted.status != 200:
            return _answer(scripted.status, _error_body(scripted.status))
        return _answer(200, _completion(request, scripted))

    def start(self) -> FakeOpenAI:
        with self._lock:
            self._release = threading.Event()
        super().start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._release.set()  # hanging handlers return at once
        super().stop()

    # -- scripting ---------------------------------------------------------------------------

    def reply(self, content: str | None, *, finish_reason: str = "stop") -> None:
        """The next request is answered 200 with this assistant message content."""
        with self._lock:
            self._script.append(_Scripted(content=content, finish_reason=finish_reason))

    def fail(self, status: int, times: int = 1) -> None:
        """The next `times` requests are answered `status` with an OpenAI-style error body."""
        with self._lock:
            self._script.extend([_Scripted(status=status)] * times)

    def hang(self, seconds: float, content: str | None = DEFAULT_CONTENT) -> None:
        """The next request is answered (200, `content`) only after `seconds`."""
        with self._lock:
            self._script.append(_Scripted(content=content, delay=seconds))

    def raw(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """The next request is answered `status` with exactly this body (a proxy's page...)."""
        with self._lock:
            self._script.append(_Scripted(status=status, raw=body, content_type=content_type))

    def drop(self, times: int = 1) -> None:
        """The next `times` requests get their connection closed without an answer."""
        with self._lock:
            self._script.extend([_Scripted(drop=True)] * times)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.authorizations.clear()
            self.paths.clear()
            self._release.set()  # a request left hanging by the previous test returns now
            self._release = threading.Event()

    # -- inspection --------------------------------------------------------------------------

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    async def wait_for(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        """At least `count` requests received."""
        return await self._wait_for(lambda: self.count >= count, self.received, timeout)

    # -- the server side (handler threads) --------------------------------------------------

    def _record(
        self, path: str, headers: Any, body: dict[str, Any]
    ) -> tuple[_Scripted, threading.Event]:
        with self._lock:
            self.requests.append(body)
            self.authorizations.append(headers.get("Authorization"))
            self.paths.append(path)
            scripted = self._script.popleft() if self._script else _Scripted()
            return scripted, self._release


def _answer(status: int, answer: dict[str, Any]) -> Answer:
    return _raw(status, json.dumps(answer).encode(), "application/json")


def _raw(status: int, data: bytes, content_type: str) -> Answer:
    headers = {"Content-Type": content_type, "x-request-id": f"req-fake-{time.monotonic_ns()}"}
    return status, data, headers


def _completion(request: dict[str, Any], scripted: _Scripted) -> dict[str, Any]:
    prompt_tokens = len(json.dumps(request.get("messages", []))) // 4
    completion_tokens = len(scripted.content or "") // 4
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", ""),
        "choices": [
            {
                "index": 0,
                "finish_reason": scripted.finish_reason,
                "message": {"role": "assistant", "content": scripted.content},
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, code = ERRORS.get(status, ("api_error", None))
    return {
        "error": {
            "message": message or f"Scripted error {status}.",
            "type": kind,
            "param": None,
            "code": code,
        }
    }
