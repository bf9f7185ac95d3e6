"""Resource figures of the worker process for ``metrics`` reports."""

from __future__ import annotations

import psutil

__all__ = ["LlmTimings", "ResourceSampler"]


class ResourceSampler:
    """RSS and real CPU percent of this process since the previous sample."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent(interval=None)  # primes the "since last call" baseline

    def sample(self) -> tuple[float, float]:
        """``(memory_mb, cpu_percent)``; 100 % is one full core."""
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_percent(interval=None)
        return rss / (1024 * 1024), max(0.0, cpu)


class LlmTimings:
    """Mean LLM response time between two reports."""

    def __init__(self) -> None:
        self._total_ms = 0.0
        self._count = 0

    def add(self, response_time_ms: float) -> None:
        self._total_ms += response_time_ms
        self._count += 1

    def take_mean(self) -> float | None:
        if self._count == 0:
            return None
        mean = self._total_ms / self._count
        self._total_ms, self._count = 0.0, 0
        return mean
