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
  whose clock drifts cannot claim with an expired lease either. A renewal waits
  for its answer at most until the step-down (:meth:`LeaseClock.renewal_budget`);
  after regaining a lost lease the manager neither sweeps nor probes for one TTL
  (:meth:`LeaseClock.regained`), so after a database outage the others renew
  before anyone's rows end.
- :func:`judge_holder`: at start, another process of the same ``MANAGER_ID``
  holds a live lease. It is replaced only when it is provably dead: same host
  and its pid is gone, or is not a docagents manager of this user. Otherwise the
  new process refuses to start (:class:`ManagerAlreadyRunning`, exit 78).
- :func:`lease_state`: what ``docagents managers`` calls a lease: ``leading``,
  ``renewing`` (live, but its manager's renewals are overdue: a paused or cut-off
  manager, or one whose database is slow), ``expired``, ``draining`` or ``stopped``.
- What the fleet's leases say: a manager's agents and free slots
  (:func:`lease_agents`, :func:`free_slots`), the weights placement uses
  (:func:`placement_slots`: leading managers only, so a draining one gets
  nothing), and when the next peer holding agents expires unless it renews
  (:func:`next_peer_expiry`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from manager.errors import ConfigurationError
from manager.store.base import ManagerLease

__all__ = [
    "HolderVerdict",
    "LeaseClock",
    "ManagerAlreadyRunning",
    "free_slots",
    "judge_holder",
    "lease_agents",
    "lease_state",
    "next_peer_expiry",
    "placement_slots",
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
    #: no sweep and no probe before this (monotonic seconds), after regaining the lease
    quiet_until: float = 0.0

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

    def renewal_budget(self, sent_at: float) -> float:
        """How long a renewal sent at ``sent_at`` may wait for its answer: one renewal
        interval, but never past the step-down (at least 50 ms), so a stuck renewal
        cannot keep a manager claiming on a lease that may have expired."""
        step_down = self.step_down_at()
        if step_down is None or step_down <= sent_at:
            return self.renew_s
        return min(self.renew_s, max(step_down - sent_at, 0.05))

    def regained(self, now: float) -> None:
        """The lease is held again after it was lost: after an outage long enough to
        lose it, every other lease probably expired too, so no sweep and no probe for
        one TTL (the others renew theirs first; a database outage takes no agent away)."""
        self.quiet_until = now + self.ttl_s

    def may_sweep(self, now: float) -> bool:
        """Whether sweeping expired leases and probing owners is allowed now."""
        return now >= self.quiet_until


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


def lease_agents(lease: ManagerLease) -> int:
    """Live rows of the manager (the database's count), else what it last reported."""
    return lease.live_agents if lease.live_agents is not None else lease.agents


def free_slots(lease: ManagerLease) -> int | None:
    """Slots the manager has left; None for an expired or stopped one (it takes nothing)."""
    if lease.state in ("expired", "stopped"):
        return None
    return max(lease.capacity - lease_agents(lease), 0)


def placement_slots(leases: Iterable[ManagerLease]) -> dict[str, int]:
    """Free slots of every manager that takes documents (``leading``): placement's weights."""
    return {
        lease.manager_id: max(lease.capacity - lease_agents(lease), 0)
        for lease in leases
        if lease.state == "leading"
    }


def next_peer_expiry(leases: Iterable[ManagerLease], manager_id: str) -> float | None:
    """Seconds until the first other live manager holding agents loses its lease unless
    it renews (by the database's clock when the leases were read); None if there is none.

    Its documents can be swept and claimed the moment that happens, not at the next
    renewal of ``manager_id``.
    """
    due = [
        _expires_in(lease)
        for lease in leases
        if lease.manager_id != manager_id
        and lease.state in ("leading", "draining")
        and lease_agents(lease) > 0
    ]
    return min(due, default=None)


def _expires_in(lease: ManagerLease) -> float:
    """Seconds until the lease expires, by the database's clock at the time it was read."""
    age = lease.lease_age_s or 0.0
    return max((lease.expires_at - lease.renewed_at).total_seconds() - age, 0.0)
