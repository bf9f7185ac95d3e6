"""Reconnect delays: exponential backoff with jitter, 1 s to 30 s (sans-IO)."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    def __init__(self, *, initial_s: float = 1.0, max_s: float = 30.0) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt: a random value in [cap/2, cap]."""
        cap = min(self._max_s, self._initial_s * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        return max(self._initial_s, random.uniform(cap / 2, cap))

    def reset(self) -> None:
        """A connection succeeded: start again from the initial delay."""
        self._attempt = 0
