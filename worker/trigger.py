"""When to run an extraction: debounce with a maximum wait (sans-IO).

Every remote change ``touch``es the debouncer. A batch is due ``debounce_s``
after the last touch, but never later than ``max_wait_s`` after the first
untaken touch, so a fast typist still gets marks while typing. A change that
typed a sentence terminator (``sentence_ended``) makes the batch due
``sentence_end_s`` after it instead: a finished sentence is extracted at once,
while ordinary keystrokes keep being coalesced.
"""

from __future__ import annotations

__all__ = ["Debouncer"]


class Debouncer:
    def __init__(
        self, *, debounce_s: float, max_wait_s: float, sentence_end_s: float | None = None
    ) -> None:
        self._debounce_s = debounce_s
        self._max_wait_s = max(max_wait_s, debounce_s)
        self._sentence_end_s = sentence_end_s
        self._first: float | None = None
        self._last: float | None = None
        self._urgent: float | None = None

    @property
    def pending(self) -> bool:
        return self._first is not None

    def touch(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now

    def sentence_ended(self, now: float) -> None:
        """A change typed '.', '!' or '?': due ``sentence_end_s`` from now (if set)."""
        if self._sentence_end_s is None:
            return
        due = now + self._sentence_end_s
        self._urgent = due if self._urgent is None else min(self._urgent, due)

    def due_at(self) -> float | None:
        """When the pending batch is due, or ``None`` if nothing is pending."""
        if self._first is None or self._last is None:
            return None
        due = min(self._last + self._debounce_s, self._first + self._max_wait_s)
        return due if self._urgent is None else min(due, self._urgent)

    def take(self) -> None:
        """The pending batch starts now; later touches start a new one."""
        self._first = None
        self._last = None
        self._urgent = None
