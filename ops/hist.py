"""A small mergeable latency histogram: 1 ms buckets below 1 s, 10 ms to 10 s, 100 ms beyond
(at most 1 % off in the range the SLO cares about). Windows of a run merge into any range."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def bucket(ms: float) -> int:
    if ms < 1000:
        return int(ms)
    if ms < 10_000:
        return int(ms // 10 * 10)
    return int(ms // 100 * 100)


class Histogram:
    __slots__ = ("buckets", "count")

    def __init__(self, buckets: Mapping[int | str, int] | None = None) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        for key, value in (buckets or {}).items():
            self.buckets[int(key)] = self.buckets.get(int(key), 0) + value
            self.count += value

    def add(self, ms: float) -> None:
        key = bucket(ms)
        self.buckets[key] = self.buckets.get(key, 0) + 1
        self.count += 1

    def merge(self, other: Histogram) -> None:
        for key, value in other.buckets.items():
            self.buckets[key] = self.buckets.get(key, 0) + value
        self.count += other.count

    def percentile(self, fraction: float) -> float | None:
        """The smallest bucket holding at least `fraction` of the samples (upper edge)."""
        if not self.count:
            return None
        wanted = fraction * self.count
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= wanted:
                return float(key + (1 if key < 1000 else 10 if key < 10_000 else 100))
        return float(max(self.buckets))

    def to_json(self) -> dict[str, int]:
        return {str(key): value for key, value in self.buckets.items()}

    @classmethod
    def merged(cls, histograms: Iterable[Histogram]) -> Histogram:
        total = cls()
        for histogram in histograms:
            total.merge(histogram)
        return total
