"""A login flood: `concurrency` clients logging in back to back for `duration` seconds.

    python -m bench.login_flood URL PASSWORD CONCURRENCY DURATION EMAIL...

Prints one JSON line: logins, logins per second, login p50/p99 in ms, errors.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import httpx


async def flood(
    url: str, password: str, concurrency: int, duration: float, emails: list[str]
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration

    async def client(number: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
            turn = number
            while time.monotonic() < deadline:
                email = emails[turn % len(emails)]
                turn += concurrency
                started = time.monotonic()
                response = await http.post(
                    "/auth/login", json={"email": email, "password": password}
                )
                if response.status_code == 200:
                    latencies.append(time.monotonic() - started)
                else:
                    errors += 1

    started = time.monotonic()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies) or [0.0]
    return {
        "logins": len(latencies),
        "logins_per_second": len(latencies) / elapsed,
        "login_p50_ms": statistics.median(ordered) * 1000,
        "login_p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "errors": errors,
    }


def main() -> int:
    url, password, concurrency, duration, *emails = sys.argv[1:]
    result = asyncio.run(flood(url, password, int(concurrency), float(duration), emails))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
