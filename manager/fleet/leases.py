"""Manager leases, the pure part: when a manager holds its lease, and whom it may replace.

Every running manager process holds a row of ``manager_leases``
(migrations/0010_manager_leases.sql), renewed every ``LEASE_RENEW_S`` with a TTL
of ``LEASE_TTL_S`` set by the database's clock. Two decisions are made here,
without I/O, so they can be tested alone:

- :class:`LeaseClock`: whether this process may still act as owner. A renewal
  sent at ``t`` (this process's monotonic clock) and answered "held" keeps the
  lease valid until ``t + ttl`` at the earliest (the database set ``expires_at``
  after ``t``). The manager steps down ``margin`` before that point unless a
  later renewal was answered; it holds the lease again at the next answered
  renewal. The database enforces the same rule on every claim, so a manager
  whose clock drifts cannot claim with an expired lease either.
- :func:`judge_holder`: at start, another process of the same ``MANAGER_ID``
  holds a live lease. It is replaced only when it is provably dead: same host
  and its pid is gone, or is not a docagents manager of this user. Otherwise the
  new process refuses to start (:class:`ManagerAlreadyRunning`, exit 78).
- :func:`lease_state`: what ``docagents managers`` calls a lease: ``leading``,
  ``renewing`` (live, but its manager's renewals are overdue: a paused or cut-off
  manager, or one whose database is slow), ``expired``, ``draining`` or ``stopped``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from manager.errors import ConfigurationError
from manager.store.base import ManagerLease

__all__ = [
    "HolderVerdict",
    "LeaseClock",
    "ManagerAlreadyRunning",
    "judge_holder",
    "lease_state",
    "renewal_overdue_after",
]


class ManagerAlreadyRunning(ConfigurationError):
    """Another live process holds this ``MANAGER_ID``'s lease (exit 78, one line)."""

    def __init__(self, holder: ManagerLease) -> None:
        super().__init__(
            f"MANAGER_ID {holder.manager_id!r} is already running (pid {holder.pid} on "
            f"host {holder.host}, lease valid until {holder.expires_at.isoformat()}); "
            "not starting a second one: give this process its own MANAGER_ID"
        )
        self.holder = holder


class HolderVerdict(enum.Enum):
    ALIVE = "alive"  # refuse to start
    DEAD = "dead"  # take the lease over (and recover its lives)


def judge_holder(
    holder: ManagerLease, *, host: str, own_pid: int, is_live_manager: Callable[[int], bool]
) -> HolderVerdict:
    """Whether the live holder of our lease is provably dead.

    Only a holder on this host can be checked: its pid must be gone, be this very
    process (a pid reused after a reboot), or not be a docagents manager of this
    user (``is_live_manager``). A holder on another host is alive until its lease
    expires.
    """
    if holder.host != host or holder.pid is None:
        return HolderVerdict.ALIVE
    if holder.pid == own_pid or not is_live_manager(holder.pid):
        return HolderVerdict.DEAD
    return HolderVerdict.ALIVE


@dataclass(slots=True)
class LeaseClock:
    """Whether the lease is held, by this process's monotonic clock."""

    ttl_s: float
    renew_s: float
    #: the end of validity of the latest answered renewal (monotonic seconds)
    valid_until: float | None = None

    def __post_init__(self) -> None:
        if self.renew_s <= 0 or self.ttl_s <= self.renew_s:
            raise ValueError("LEASE_TTL_S must be greater than LEASE_RENEW_S (both > 0)")

    @property
    def margin_s(self) -> float:
        """Stepping down this long before the lease may expire (claims in flight)."""
        return min(self.renew_s / 2, self.ttl_s / 10)

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at ``sent_at`` was answered: the lease is ours."""
        until = sent_at + self.ttl_s
        if self.valid_until is None or until > self.valid_until:
            self.valid_until = until

    def lost(self) -> None:
        """The database answered that another instance holds the lease."""
        self.valid_until = None

    def holds(self, now: float) -> bool:
        return self.valid_until is not None and now < self.valid_until - self.margin_s

    def step_down_at(self) -> float | None:
        """When :meth:`holds` turns false without a renewal."""
        return None if self.valid_until is None else self.valid_until - self.margin_s


def renewal_overdue_after(renew_s: float) -> float:
    """Lease age (seconds) beyond which a renewal is overdue.

    A healthy manager renews every ``renew_s`` and waits at most ``renew_s`` for the
    answer, so its lease is never older than ``2 * renew_s`` when read; one that is
    older has missed at least one renewal.
    """
    return 2 * renew_s


def lease_state(lease: ManagerLease, *, renew_s: float) -> str:
    """The state to report for ``lease``, read from ``list_manager_leases()``.

    The database says ``leading``, ``draining``, ``expired`` or ``stopped``; a
    ``leading`` lease whose last renewal is older than
    :func:`renewal_overdue_after` is reported ``renewing``: still valid (its manager
    still acts as owner until it steps down), but it expires within the TTL unless a
    renewal gets through. ``renew_s`` is the reader's ``LEASE_RENEW_S`` (one fleet
    shares its lease settings). A draining lease stays ``draining``: the drain is
    what an operator asked for, and its agents are leaving either way.
    """
    if (
        lease.state == "leading"
        and lease.lease_age_s is not None
        and lease.lease_age_s > renewal_overdue_after(renew_s)
    ):
        return "renewing"
    return lease.state
