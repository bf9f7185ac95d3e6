"""The fleet's shell: this manager's lease, the sweep of dead managers, the probe.

:class:`LeaseKeeper` takes the lease at start (refusing to start beside a live
process of the same ``MANAGER_ID``), then every ``LEASE_RENEW_S``:

1. renews the lease (reporting agents and capacity); an answered renewal keeps
   the :class:`~manager.fleet.leases.LeaseClock` valid, an unanswered one is counted
   (``docagents_lease_renew_failures_total``); when the clock runs out the
   supervisor is told :meth:`~manager.supervise.supervisor.Supervisor.lease_lost` (no new
   claims, workers keep running) and, at the next answered renewal,
   :meth:`~manager.supervise.supervisor.Supervisor.lease_regained`;
2. ends the live rows of every expired lease (``sweep_expired_leases``, counted
   in ``docagents_failovers_total``);
3. asks which of the documents the supervisor sees as owned elsewhere have no
   live owner any more, or an owner that drains (``claimable_documents``), so they
   are claimed now (also right after a peer's lease is due to expire, between
   renewals);
4. reads the other live managers' free slots (``list_manager_leases``) for the
   supervisor's placement (:meth:`~manager.supervise.supervisor.Supervisor.fleet_changed`).

A drain (:meth:`LeaseKeeper.start_draining`) marks the lease 'draining' at once
(``drain_manager()``, which NOTIFYs ``manager_leases``); every manager's activity
listener passes that notification to :meth:`LeaseKeeper.wake`, so the others
renew, probe and claim the draining manager's documents within moments instead
of at their next renewal (make-before-break: ``claim_document()`` hands a
draining manager's row over).

After an outage long enough to expire this manager's lease, every other lease
probably expired with it: a manager that regains its lease neither sweeps nor
probes for one ``LEASE_TTL_S``, so the others renew theirs first and a database
outage takes no agent away (invariant 10).

What the leases mean (does this process hold its lease, and may it sweep? how
long may a renewal take? is the other holder dead? how many free slots has each
manager? when does the next peer expire?) is decided in
:mod:`manager.fleet.leases`, without I/O; this module does the I/O and sleeps
until the next of those moments.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence

import anyio
import psutil
import structlog

from manager.config import Settings
from manager.errors import StoreError
from manager.fleet.leases import (
    HolderVerdict,
    LeaseClock,
    ManagerAlreadyRunning,
    judge_holder,
    next_peer_expiry,
    placement_slots,
)
from manager.store.base import LeaseAnswer, Store
from manager.supervise.lives import monotonic
from manager.supervise.supervisor import Action, Supervisor

__all__ = ["LeaseKeeper", "is_live_manager"]

log = structlog.get_logger(__name__)

#: A manager's command line contains one of these (``docagents manager``,
#: ``docagents up``, ``python -m manager.cli manager``).
MANAGER_CMDLINE_MARKERS = ("docagents", "manager.cli")


def is_live_manager(pid: int) -> bool:
    """Whether ``pid`` is a running docagents manager of this user (not a zombie)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.uids().real != os.getuid():
            return False
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return any(marker in cmdline for marker in MANAGER_CMDLINE_MARKERS)


#: Probe this long after a peer's lease is due to expire (the database's clock decides).
_EXPIRY_SLACK_S = 0.05


class LeaseKeeper:
    """Holds this process's lease and watches the fleet (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        supervisor: Supervisor,
        *,
        host: str,
        dispatch: Callable[[Sequence[Action]], None],
        on_failover: Callable[[int], None] = lambda n: None,
        on_renew_failure: Callable[[], None] = lambda: None,
        on_displaced: Callable[[], None] = lambda: None,
        on_regained: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.supervisor = supervisor
        self.host = host
        self.instance_id = uuid.uuid4()
        self.clock = LeaseClock(ttl_s=settings.lease_ttl_s, renew_s=settings.lease_renew_s)
        self.draining = False
        self.renew_failures = 0
        #: when the latest renewal was answered (monotonic), None before the first
        self.renewed_at: float | None = None
        self.failovers = 0
        #: when the next other manager's lease expires unless renewed (monotonic)
        self._expiry_due: float | None = None
        self._dispatch = dispatch
        self._on_failover = on_failover
        self._on_renew_failure = on_renew_failure
        self._on_displaced = on_displaced
        self._on_regained = on_regained
        self._wake = anyio.Event()
        #: a drain begun here that the database has not been told of yet
        self._announce_drain = False

    # --- start --------------------------------------------------------------------

    async def acquire(self) -> LeaseAnswer:
        """Take the lease, or raise :class:`ManagerAlreadyRunning` (a live holder).

        Returns the answer; its ``took_over`` says the previous holder was dead
        (expired, stopped, or proven dead on this host), whose lives crash recovery
        then ends.
        """
        sent = monotonic()
        answer = await self._acquire()
        if not answer.acquired:
            holder = answer.lease
            verdict = judge_holder(
                holder, host=self.host, own_pid=os.getpid(), is_live_manager=is_live_manager
            )
            if verdict is HolderVerdict.ALIVE:
                raise ManagerAlreadyRunning(holder)
            log.warning(
                "manager_lease_holder_dead",
                manager_id=holder.manager_id,
                pid=holder.pid,
                host=holder.host,
            )
            sent = monotonic()
            answer = await self._acquire(replaces=holder.instance_id)
            if not answer.acquired:
                raise ManagerAlreadyRunning(answer.lease)
        self.clock.renewed(sent)
        log.info(
            "manager_lease_acquired",
            manager_id=self.settings.manager_id,
            instance_id=str(self.instance_id),
            took_over=answer.took_over,
            ttl_s=self.settings.lease_ttl_s,
        )
        return answer

    async def sweep(self) -> int:
        """End the lives of expired leases; the number ended (0 if the store failed)."""
        try:
            ended = await self.store.sweep_expired_leases()
        except StoreError as exc:
            log.debug("lease_sweep_failed", error=str(exc))
            return 0
        for row in ended:
            log.info(
                "dead_manager_life_ended",
                document_id=row.document_id,
                agent_id=row.agent_id,
                dead_manager_id=row.manager_id,
            )
        if ended:
            self.failovers += len(ended)
            self._on_failover(len(ended))
        return len(ended)

    async def release(self) -> None:
        """A clean stop: the lease is marked stopped (the next start takes it at once)."""
        try:
            with anyio.fail_after(max(self.settings.lease_renew_s, 1.0)):
                await self.store.release_lease(self.settings.manager_id, self.instance_id)
        except (StoreError, TimeoutError) as exc:
            log.warning("manager_lease_release_failed", error=str(exc))

    # --- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Renew, sweep and probe every ``LEASE_RENEW_S`` until cancelled."""
        renew_s = self.settings.lease_renew_s
        next_renewal = monotonic()
        while True:
            if monotonic() >= next_renewal:
                next_renewal = monotonic() + renew_s
                await self.tick()
            elif self._expiry_due is not None and monotonic() >= self._expiry_due:
                # Another manager's lease has just expired: its documents, now.
                self._expiry_due = None
                if self.supervisor.holds_lease and self.clock.may_sweep(monotonic()):
                    await self.sweep()
                    await self.probe()
            wake = next_renewal
            step_down = self.clock.step_down_at()
            if step_down is not None and self.supervisor.holds_lease:
                wake = min(wake, step_down)
            if self._expiry_due is not None:
                wake = min(wake, self._expiry_due)
            with anyio.move_on_after(max(0.0, wake - monotonic())):
                await self._wake.wait()
            if self._wake.is_set():
                # A drain began (here or elsewhere): tell the database, renew and
                # probe now.
                self._wake = anyio.Event()
                await self._announce()
                next_renewal = monotonic()
            if self.supervisor.holds_lease and not self.clock.holds(monotonic()):
                self._step_down()

    async def tick(self) -> None:
        await self.renew()
        if self.supervisor.holds_lease and self.clock.may_sweep(monotonic()):
            await self.sweep()
            await self.probe()
        await self.read_fleet()

    async def read_fleet(self) -> None:
        """The other live managers' free slots, for placement."""
        try:
            leases = await self.store.list_leases()
        except StoreError as exc:
            log.debug("fleet_read_failed", error=str(exc))
            return
        actions = self.supervisor.fleet_changed(placement_slots(leases), monotonic())
        if actions:
            self._dispatch(actions)
        # A peer holding documents that stops renewing is swept the moment its lease
        # expires, not at this manager's next renewal.
        expiry = next_peer_expiry(leases, self.settings.manager_id)
        self._expiry_due = None if expiry is None else monotonic() + expiry + _EXPIRY_SLACK_S

    async def renew(self) -> None:
        sent = monotonic()
        budget = self.clock.renewal_budget(sent)
        answer: LeaseAnswer | None = None
        try:
            with anyio.fail_after(budget):
                answer = await self._acquire()
        except (StoreError, TimeoutError) as exc:
            self.renew_failures += 1
            self._on_renew_failure()
            log.warning("manager_lease_renew_failed", error=str(exc) or type(exc).__name__)
        now = monotonic()
        if answer is not None and answer.acquired:
            self.clock.renewed(sent)
            self.renewed_at = now
            if answer.lease.state == "draining" and not self.supervisor.draining:
                self.start_draining("docagents drain", announce=False)
            if not self.supervisor.holds_lease and self.clock.holds(now):
                log.info("manager_lease_regained", manager_id=self.settings.manager_id)
                self.clock.regained(now)
                self._on_regained()  # the daemon audits its rows at once
                self._dispatch(self.supervisor.lease_regained(now))
        elif answer is not None:
            self.clock.lost()
            log.error(
                "manager_lease_taken_over",
                manager_id=self.settings.manager_id,
                holder_pid=answer.lease.pid,
                holder_host=answer.lease.host,
            )
            self._step_down()
            self._on_displaced()
            return
        if self.supervisor.holds_lease and not self.clock.holds(now):
            self._step_down()

    def wake(self) -> None:
        """A notification on ``manager_leases``: renew, sweep, probe and read the fleet
        now (a manager began to drain; its documents can be claimed)."""
        self._wake.set()

    def start_draining(self, by: str, *, announce: bool = True) -> None:
        """Take no documents and hand every agent over (the supervisor decides how);
        the lease says 'draining' at once (``announce``: through ``drain_manager()``,
        which wakes the other managers), else from the next renewal on."""
        if self.supervisor.draining:
            return
        self.draining = True
        if announce:
            self._announce_drain = True
            self._wake.set()
        log.warning(
            "manager_draining",
            manager_id=self.settings.manager_id,
            by=by,
            agents=self.supervisor.lives,
        )
        self._dispatch(self.supervisor.drain(monotonic()))

    async def _announce(self) -> None:
        """Mark this lease 'draining' and notify the fleet (once per drain)."""
        if not self._announce_drain:
            return
        self._announce_drain = False
        try:
            with anyio.fail_after(max(self.settings.lease_renew_s, 1.0)):
                await self.store.drain_manager(self.settings.manager_id)
        except (StoreError, TimeoutError) as exc:
            # The next renewal says 'draining' anyway; the others then see it late.
            log.warning("drain_announce_failed", error=str(exc) or type(exc).__name__)

    async def probe(self) -> None:
        """Claim at once the documents owned elsewhere whose owner is gone."""
        documents = self.supervisor.owned_elsewhere_documents()
        if not documents:
            return
        try:
            free = await self.store.claimable_documents(documents)
        except StoreError as exc:
            log.debug("owner_probe_failed", error=str(exc))
            return
        if free:
            log.info("owned_elsewhere_freed", documents=len(free))
            self._dispatch(self.supervisor.documents_claimable(free, monotonic()))

    def _step_down(self) -> None:
        if self.supervisor.holds_lease:
            log.warning(
                "manager_lease_lost",
                manager_id=self.settings.manager_id,
                running=self.supervisor.lives,
            )
            self._dispatch(self.supervisor.lease_lost(monotonic()))

    async def _acquire(self, replaces: uuid.UUID | None = None) -> LeaseAnswer:
        return await self.store.acquire_lease(
            self.settings.manager_id,
            self.instance_id,
            host=self.host,
            pid=os.getpid(),
            ttl_s=self.settings.lease_ttl_s,
            capacity=self.supervisor.capacity,
            agents=self.supervisor.lives,
            state="draining" if self.draining else "leading",
            replaces=replaces,
        )
