"""The outside services a production-mode run needs and this machine has not: an SMTP sink
(aiosmtpd, as in the tests), FCM's HTTP v1 API, and an OpenAI-compatible chat API that answers a
valid stage plan after a short, DeepSeek-like delay. All run in threads of the orchestrating
process; the sink and FCM count what they received, for the consistency check."""

from __future__ import annotations

import json
import random
import re
import secrets
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from goaltrack.dev.localstack import free_port


class SmtpSink:
    """Accepts every message (250) and counts them, and per recipient address."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0
        self.by_recipient: Counter[str] = Counter()
        self._controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received += 1
        self.by_recipient.update(address.lower() for address in envelope.rcpt_tos)
        return "250 OK"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


_SEND_PATH = re.compile(r"^/v1/projects/[^/]+/messages:send$")


class FakeFcm:
    """FCM's HTTP v1 API as the app's sender uses it: an access token for any JWT-bearer grant,
    and every send answered 200 and counted by (data.notification_id, device token)."""

    project_id = "goaltrack-ops"

    def __init__(self) -> None:
        self.port = free_port()
        self.sends: Counter[tuple[str, str]] = Counter()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_credentials(self, directory: Path) -> Path:
        """A service-account key file whose token_uri is this server (a fresh RSA key)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        path = directory / "fcm.json"
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": self.project_id,
                    "private_key_id": secrets.token_hex(20),
                    "private_key": pem,
                    "client_email": f"ops@{self.project_id}.iam.gserviceaccount.com",
                    "token_uri": f"{self.url}/token",
                }
            )
        )
        path.chmod(0o600)
        return path

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/token":
                    self._answer(
                        {"access_token": "ops-" + secrets.token_hex(8), "expires_in": 3600}
                    )
                elif _SEND_PATH.match(self.path):
                    message = json.loads(body)["message"]
                    key = (message.get("data", {}).get("notification_id", ""), message["token"])
                    fake.sends[key] += 1
                    self._answer(
                        {"name": f"projects/{fake.project_id}/messages/{secrets.token_hex(8)}"}
                    )
                else:
                    self._answer({"error": {"code": 404}}, status=404)

            def _answer(self, answer: dict[str, Any], status: int = 200) -> None:
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-fcm", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


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
