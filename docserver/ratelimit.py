"""A token bucket for what one connection sends (pure; the caller owns the clock).

One bucket counts messages (one token each), another counts bytes (one token per byte).
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def take(self, now: float, cost: float = 1) -> float:
        """Spend ``cost`` tokens; return how long to wait before handling the message (0 if none).

        A cost above the burst is allowed (the debt is paid by waiting), so a single
        large message is slowed down, never refused here.
        """
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= cost
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self._rate
