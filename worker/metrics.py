"""Resource figures of the worker process for ``metrics`` reports."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

__all__ = ["LlmTimings", "ResourceSample", "ResourceSampler"]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ResourceSample:
    """One report's figures; memory in MiB, CPU in percent of one core."""

    rss_mb: float
    pss_mb: float | None
    uss_mb: float | None
    cpu_percent: float


class ResourceSampler:
    """RSS, PSS, USS and real CPU percent of this process since the previous sample.

    PSS and USS come from ``/proc/<pid>/smaps_rollup`` (psutil's
    ``memory_full_info``), for which the kernel walks the page tables: about a
    millisecond of CPU per sample, tens of times what RSS alone costs, affordable
    once per ``METRICS_INTERVAL_S``. Where the kernel does not offer them (not
    Linux, or access refused), they are ``None``.
    """

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent(interval=None)  # primes the "since last call" baseline
        self._full = True

    def sample(self) -> ResourceSample:
        with self._process.oneshot():
            pss = uss = None
            if self._full:
                try:
                    full = self._process.memory_full_info()
                except (psutil.AccessDenied, NotImplementedError):
                    self._full = False
                    rss = self._process.memory_info().rss
                else:
                    rss = full.rss
                    pss = getattr(full, "pss", None)
                    uss = getattr(full, "uss", None)
            else:
                rss = self._process.memory_info().rss
            cpu = self._process.cpu_percent(interval=None)
        return ResourceSample(
            rss_mb=rss / _MIB,
            pss_mb=None if pss is None else pss / _MIB,
            uss_mb=None if uss is None else uss / _MIB,
            cpu_percent=max(0.0, cpu),
        )


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
