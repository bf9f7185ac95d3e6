"""A sliding-window call budget (``LLM_MAX_CALLS_PER_MINUTE``), one per document."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["CallBudget"]


class CallBudget:
    """At most ``limit`` calls in any ``window_s`` seconds. Never blocks: a caller over
    budget is told so and skips the call."""

    def __init__(
        self, limit: int, window_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._calls: deque[float] = deque()

    def try_acquire(self, *, reserve: int = 0) -> bool:
        """Spend one call if the window allows it, leaving ``reserve`` calls unspent;
        False (and nothing spent) if not."""
        now = self._clock()
        while self._calls and now - self._calls[0] >= self._window_s:
            self._calls.popleft()
        if len(self._calls) >= max(1, self._limit - reserve):
            return False
        self._calls.append(now)
        return True

    def free_in(self, *, reserve: int = 0) -> float:
        """Seconds until the window frees a call for a caller leaving ``reserve``."""
        limit = max(1, self._limit - reserve)
        if len(self._calls) < limit:
            return 0.0
        # The call that must leave the window first for one to be free.
        index = len(self._calls) - limit
        return max(0.0, self._calls[index] + self._window_s - self._clock())
