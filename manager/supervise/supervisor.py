"""The supervisor's decision core: which documents get an agent, and when.

Pure code (STYLE.md, "Sans-IO cores"): the daemon feeds it what happened
(activity events, claim answers, worker reports and exits, the lease, the clock)
and executes the actions it returns (:mod:`~manager.supervise.actions`). It never
sleeps and never does I/O. The core is six modules, each importing only the ones
before it: :mod:`~manager.supervise.actions` (the records),
:mod:`~manager.supervise.documents` (phases and per-document state),
:mod:`~manager.supervise.policy` (restarts, placement, eviction),
:mod:`~manager.supervise.life_reports` (one life's claim answer and worker
reports), :mod:`~manager.supervise.drain` (handing documents over), and this
one, whose :class:`Supervisor` takes the manager-wide inputs and reconciles.
``docs/lifecycle.md`` draws the whole machine.

Rules decided here:

- A document is *wanted* while its latest event is ``active`` (``user_joined``
  also means someone is there; ``idle`` ends it). A batch of events is applied
  as a whole before deciding, so a storm of events for one document costs no
  process churn. The docserver alone decides who is a person; the manager
  follows its rows.
- At most ``capacity`` worker processes at once (invariant 2), and at most
  ``capacity`` lives besides the claims that will evict a worker (each borrows
  its victim's slot). Recency is the latest sign of people at work: an activity
  row (a visit, or the docserver's ``edit`` rows for documents without an agent)
  or a running worker's ``activity`` report; slots go to the most recent
  (:func:`~manager.supervise.policy.allot_slots`).
- Only a manager holding its lease claims (invariant 9): after
  :meth:`Supervisor.lease_lost` no ``Claim`` is issued (not even a retry of a
  lost answer) until :meth:`Supervisor.lease_regained`; running workers keep
  running (invariant 10). Documents owned elsewhere are probed every lease
  renewal (``owned_elsewhere_documents``, :meth:`Supervisor.documents_claimable`),
  so a dead manager's documents are claimed as soon as its lease expires, not
  after ``claim_retry_s``.
- Placement: with other live managers known (:meth:`Supervisor.fleet_changed`),
  a newly wanted document is claimed at once only by the manager
  :func:`~manager.supervise.policy.placement_pick` names; the others wait
  ``placement_delay_s`` first, so a document never waits longer than that for a
  manager that is full or gone.
- Drain (:mod:`~manager.supervise.drain`), make-before-break: nothing is
  claimed or started again, the agents keep running until the other managers
  have taken their documents over, then detach (``drained``).
  Shutdown (:meth:`Supervisor.shutdown`): every agent detaches
  (``manager_shutdown``); claims in flight end on their answer.
- ``idle`` -> detach. A worker reporting ``abandoned`` (a third-party server's
  fallback, off with our docserver) -> detach, and no new worker until the next
  ``active`` event. A document blocked by a crash loop is unblocked by its next
  visit (an ``active`` row that is not an ``edit``).

The names the daemon uses are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from manager.supervise.actions import Action, Claim, EndLife, EndReason, Kill, Spawn, Stop
from manager.supervise.documents import (
    HAS_PROCESS,
    NO_LIFE,
    DocumentState,
    EventLike,
    Phase,
    wanted_from_latest,
)
from manager.supervise.drain import DrainRules
from manager.supervise.policy import RestartPolicy, allot_slots, placement_pick

__all__ = [
    "Action",
    "Claim",
    "EndLife",
    "EndReason",
    "EventLike",
    "Kill",
    "Phase",
    "RestartPolicy",
    "Spawn",
    "Stop",
    "Supervisor",
    "wanted_from_latest",
]


class Supervisor(DrainRules):
    """Decides; the daemon executes. All times are ``time.monotonic()`` seconds.

    Built on :class:`~manager.supervise.documents.DocumentBook` (the documents'
    state and the read-only queries: ``lives``, ``workers``, ``waiting``,
    ``phase`` ...), :class:`~manager.supervise.drain.DrainRules` (the drain) and
    :class:`~manager.supervise.life_reports.LifeReports` (the
    inputs about one life). Every input returns the actions it calls for.
    """

    def __init__(
        self,
        capacity: int,
        *,
        min_residency_s: float = 10.0,
        policy: RestartPolicy | None = None,
        new_agent_id: Callable[[], str],
        manager_id: str = "",
        holds_lease: bool = True,
        placement_delay_s: float = 1.0,
        drain_timeout_s: float = 15.0,
        handoff_grace_s: float = 5.0,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        super().__init__()
        self.capacity = capacity
        self.min_residency_s = min_residency_s
        self.policy = policy or RestartPolicy()
        self.manager_id = manager_id
        self._new_agent_id = new_agent_id
        self._shutting_down = False
        self._holds_lease = holds_lease
        self._draining = False
        self.drain_timeout_s = drain_timeout_s
        self.handoff_grace_s = handoff_grace_s
        self._drain_deadline: float | None = None
        self.placement_delay_s = placement_delay_s
        #: other live managers and their free slots (from their leases)
        self._peers: dict[str, int] = {}
        #: since this supervisor was made (the stats box's totals)
        self.evictions = 0
        self.restarts = 0
        self.events_applied = 0

    # --- queries -------------------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    @property
    def holds_lease(self) -> bool:
        """Whether this manager may claim (its lease is valid as far as it knows)."""
        return self._holds_lease

    def next_deadline(self, now: float) -> float | None:
        """When :meth:`tick` may have something new to do (a backoff or a residency ends).

        One pass: it runs after every dispatch, with hundreds of documents.
        """
        if self._shutting_down:
            return None
        if self._draining:
            return self._drain_next_deadline()
        backoff: float | None = None
        residency: float | None = None
        ready_waiting = False
        for d in self._docs.values():
            phase = d.phase
            if phase is Phase.NO_WORKER or phase is Phase.OWNED_ELSEWHERE:
                if d.effectively_wanted:
                    if d.not_before > now:
                        backoff = d.not_before if backoff is None else min(backoff, d.not_before)
                    elif phase is Phase.NO_WORKER:
                        ready_waiting = True
            elif phase is Phase.STARTING or phase is Phase.RUNNING:
                ends = d.started_at + self.min_residency_s
                if ends > now:
                    residency = ends if residency is None else min(residency, ends)
        # A residency ending matters only to a document that may evict.
        deadlines = [t for t in (backoff, residency if ready_waiting else None) if t is not None]
        return min(deadlines, default=None)

    # --- inputs: activity ----------------------------------------------------------

    def load(self, latest: Iterable[EventLike], now: float) -> list[Action]:
        """Start-up: the latest event of every document, in id order (oldest first)."""
        for event in latest:
            if wanted_from_latest(event):
                doc = self._doc(event.document_id)
                doc.wanted = True
                doc.recency = next(self._recency)
        return self._reconcile(now)

    def apply_events(self, events: Iterable[EventLike], now: float) -> list[Action]:
        """Apply a batch of events in order, then decide once (coalescing storms)."""
        for event in events:
            self.events_applied += 1
            kind = event.event_type
            if kind == "idle":
                doc = self._docs.get(event.document_id)
                if doc is not None:
                    doc.wanted = False
                    doc.detach_reason = EndReason.IDLE
                continue
            if kind not in ("active", "user_joined", "user_left"):
                continue  # unknown types cannot reach us (CHECK), but never crash on one
            if kind == "user_left" and event.document_id not in self._docs:
                continue
            doc = self._doc(event.document_id)
            doc.recency = next(self._recency)
            if (
                kind in ("active", "user_joined")
                and not doc.wanted
                and doc.phase is Phase.NO_WORKER
                and not self.placed_here(doc.document_id)
            ):
                # Another manager is the pick: it claims first; this one only if it
                # has not after the delay (full, or gone).
                doc.not_before = max(doc.not_before, now + self.placement_delay_s)
            if kind == "active":
                doc.wanted = True
                if doc.blocked == EndReason.CRASH_LOOP and not event.edit:
                    doc.crash_times.clear()
                    doc.consecutive_crashes = 0
                    doc.not_before = 0.0
                    doc.blocked = None
                elif doc.blocked == EndReason.ABANDONED:
                    doc.blocked = None
            elif kind == "user_joined":
                doc.wanted = True
        return self._reconcile(now)

    # --- inputs: the lease ---------------------------------------------------------

    def lease_lost(self, now: float) -> list[Action]:
        """The lease could not be renewed before it expired: no claims from now on.

        Workers keep running (a lost lease is not a reason to stop agents); a row
        another manager takes over is found by the audit (:meth:`rows_audited`).
        """
        self._holds_lease = False
        return []

    def lease_regained(self, now: float) -> list[Action]:
        """The lease is held again: waiting documents are claimed."""
        self._holds_lease = True
        return self._reconcile(now)

    def documents_claimable(self, document_ids: Iterable[str], now: float) -> list[Action]:
        """These documents have no live owner any more (the probe said so): documents
        seen as owned elsewhere are tried again now instead of after ``claim_retry_s``."""
        changed = False
        for document_id in document_ids:
            doc = self._docs.get(document_id)
            if doc is not None and doc.phase is Phase.OWNED_ELSEWHERE and doc.not_before > now:
                doc.not_before = now
                changed = True
        return self._reconcile(now) if changed else []

    def fleet_changed(self, peers: Mapping[str, int], now: float) -> list[Action]:
        """The other live managers and their free slots (read at every lease renewal).

        While draining, what is left detaches once none of them has a free slot."""
        self._peers = {m: free for m, free in peers.items() if m != self.manager_id}
        return self._reconcile(now) if self._draining else []

    def owned_elsewhere_documents(self) -> list[str]:
        """Wanted documents another manager holds (to probe whether they became free);
        none while draining or shutting down (nothing would be claimed)."""
        if self._draining or self._shutting_down:
            return []
        return super().owned_elsewhere_documents()

    def placed_here(self, document_id: str) -> bool:
        """Whether weighted rendezvous hashing over the live managers with free slots
        (weight: free slots; this manager's counted now, the others' as last renewed)
        picks this manager for the document. Without peers: always."""
        if not self._peers:
            return True
        members = [*self._peers.items(), (self.manager_id, self.capacity - self.lives)]
        pick = placement_pick(document_id, members)
        return pick is None or pick == self.manager_id

    # --- inputs: time and shutdown -------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Time passed: backoffs and residencies may have ended."""
        return self._reconcile(now)

    def shutdown(self) -> list[Action]:
        """Stop every worker; start none from now on (claims in flight end on answer)."""
        self._shutting_down = True
        actions: list[Action] = []
        for doc in self._docs.values():
            if doc.phase in (Phase.STARTING, Phase.RUNNING) and doc.agent_id is not None:
                actions.append(self._stop(doc, EndReason.MANAGER_SHUTDOWN))
            elif doc.phase is Phase.CLAIMED and doc.agent_id is not None:
                end = EndLife(
                    doc.document_id, doc.agent_id, "disconnected", str(EndReason.MANAGER_SHUTDOWN)
                )
                self._no_life(doc, end)
                actions.append(end)
            elif doc.phase in NO_LIFE and doc.unanswered_claim is not None:
                actions.append(self._end_unanswered(doc, EndReason.MANAGER_SHUTDOWN))
        return actions

    # --- internals -----------------------------------------------------------------

    def _spawn(self, doc: DocumentState) -> Spawn:
        assert doc.agent_id is not None
        doc.phase = Phase.STARTING
        restart = doc.crashed_last
        if restart:
            self.restarts += 1
        return Spawn(doc.document_id, doc.agent_id, restart=restart)

    def _claim(self, doc: DocumentState, now: float) -> Claim:
        agent_id = doc.unanswered_claim or self._new_agent_id()
        doc.phase = Phase.CLAIMING
        doc.agent_id = agent_id
        doc.started_at = now
        doc.connected_at = None
        doc.ending_reason = None
        return Claim(doc.document_id, agent_id, supersedes=doc.last_end)

    def _reconcile(self, now: float) -> list[Action]:
        if self._shutting_down:
            return []
        if self._draining:
            return self._reconcile_draining(now)
        actions: list[Action] = []
        processes = 0
        used = 0  # slots taken: processes, and claims that evict nobody
        terminating = 0
        evictable: list[DocumentState] = []
        candidates: list[DocumentState] = []
        claimed: list[DocumentState] = []
        for doc in list(self._docs.values()):
            phase = doc.phase
            if phase in (Phase.STARTING, Phase.RUNNING) and not doc.effectively_wanted:
                actions.append(self._stop(doc, self._detach_reason(doc)))
                phase = doc.phase
            elif phase is Phase.CLAIMED and not doc.effectively_wanted:
                assert doc.agent_id is not None
                end = EndLife(
                    doc.document_id, doc.agent_id, "disconnected", self._detach_reason(doc)
                )
                self._no_life(doc, end)
                actions.append(end)
                phase = doc.phase
            if phase in HAS_PROCESS:
                processes += 1
                used += 1
                if phase in (Phase.STOPPING, Phase.KILLING):
                    terminating += 1
                elif doc.evicted_by is None and now - doc.started_at >= self.min_residency_s:
                    evictable.append(doc)
            elif phase in (Phase.CLAIMING, Phase.CLAIMED):
                if doc.victim is None:
                    used += 1
                if phase is Phase.CLAIMED:
                    claimed.append(doc)
            elif not doc.effectively_wanted:
                if doc.unanswered_claim is not None:
                    actions.append(self._end_unanswered(doc, self._detach_reason(doc)))
                self._forget_if_unused(doc)
            elif doc.unanswered_claim is not None:
                # Its row may exist: the life keeps its slot and is claimed again.
                used += 1
                if doc.not_before <= now and self._holds_lease:
                    actions.append(self._claim(doc, now))
            elif doc.not_before <= now:
                candidates.append(doc)
        # Claimed lives get a process as soon as there is room for one.
        claimed.sort(key=lambda d: (d.victim is not None, -d.recency))
        for doc in claimed:
            if processes >= self.capacity:
                break
            actions.append(self._spawn(doc))
            processes += 1
        if not candidates or not self._holds_lease:
            return actions
        plan = allot_slots(
            candidates, evictable, free=self.capacity - used, terminating=terminating
        )
        for doc, victim in plan:
            # Claim first; the victim is stopped only once the claim succeeds, so a
            # document this manager cannot get never costs a running agent.
            actions.append(self._claim(doc, now))
            if victim is not None:
                doc.victim = victim.document_id
                victim.evicted_by = doc.document_id
        return actions
