"""When to run an extraction: debounce with a maximum wait (sans-IO).

Every remote change ``touch``es the debouncer. A batch is due ``debounce_s``
after the last touch, but never later than ``max_wait_s`` after the first
untaken touch, so a fast typist still gets marks while typing.
"""

from __future__ import annotations

__all__ = ["Debouncer"]


class Debouncer:
    def __init__(self, *, debounce_s: float, max_wait_s: float) -> None:
        self._debounce_s = debounce_s
        self._max_wait_s = max(max_wait_s, debounce_s)
        self._first: float | None = None
        self._last: float | None = None

    @property
    def pending(self) -> bool:
        return self._first is not None

    def touch(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now

    def due_at(self) -> float | None:
        """When the pending batch is due, or ``None`` if nothing is pending."""
        if self._first is None or self._last is None:
            return None
        return min(self._last + self._debounce_s, self._first + self._max_wait_s)

    def take(self) -> None:
        """The pending batch starts now; later touches start a new one."""
        self._first = None
        self._last = None
