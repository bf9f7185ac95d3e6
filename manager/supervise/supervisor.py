"""The supervisor's decision core: which documents get an agent, and when.

Pure code (STYLE.md, "Sans-IO cores"): the daemon feeds it what happened
(activity events, claim answers, worker reports and exits, the clock) and
executes the actions it returns (:class:`Claim`, :class:`Spawn`, :class:`Stop`,
:class:`Kill`, :class:`EndLife`). It never sleeps, never does I/O, and holds
state only for documents that are wanted or have a life, so memory stays bounded
by those. ``docs/lifecycle.md`` draws the same machine with the docserver's side
and the ``agent_connections`` statuses.

One document, as this manager sees it (``Phase``)::

    NO_WORKER --wanted, slot--> CLAIMING --claimed--> STARTING --connected--> RUNNING
        ^  ^                     |   |                   |                      |
        |  |   refused by another|   |answer lost        +------ Stop ----------+--> STOPPING
        |  |   manager's live row|   |(retry, same id)   +------ Kill ----------+--> KILLING
        |  +-- OWNED_ELSEWHERE <-+   v                                               |
        |      (retried into a   NO_WORKER                               exit: EndLife
        |       free slot only)                                                      |
        +----------------------------------------------------------------------------+

Rules:

- A document is *wanted* while its latest event is ``active`` (``user_joined``
  also means someone is there; ``idle`` ends it). A batch of events is applied
  as a whole before deciding, so a storm of events for one document costs no
  process churn. The docserver alone decides who is a person; the manager
  follows its rows.
- At most ``capacity`` lives (claiming, starting, running or stopping) at once.
- Recency is the latest sign of people at work: an activity row (a visit, or the
  docserver's ``edit`` rows for documents without an agent) or a running
  worker's ``activity`` report. Slots go to the most recent wanted documents; a
  waiting document evicts the least recent worker only if that worker is less
  recent than it and older than ``min_residency_s``; the evicted document stays
  wanted and waits.
- A document whose live row belongs to another manager is ``OWNED_ELSEWHERE``:
  it takes a free slot when one is there (every ``claim_retry_s``), and never
  evicts anything for a document it may never get.
- A claim is idempotent per life: when its answer is lost, the same agent id
  is claimed again (backoff from 1 s up to ``claim_retry_s``); a life's claim
  also ends (``supersedes``) this manager's previous row of the document, whose
  end may still sit in the writer's buffer. A stop that arrives while the claim
  is in flight ends the life as soon as the claim answers, before any process.
- Only a manager holding its lease claims (invariant 9): after
  :meth:`Supervisor.lease_lost` no ``Claim`` is issued (not even a retry of a
  lost answer) until :meth:`Supervisor.lease_regained`; running workers keep
  running (invariant 10). Documents owned elsewhere are probed every lease
  renewal (:meth:`Supervisor.owned_elsewhere_documents`,
  :meth:`Supervisor.documents_claimable`), so a dead manager's documents are
  claimed as soon as its lease expires, not after ``claim_retry_s``.
- Placement: with other live managers known (:meth:`Supervisor.fleet_changed`,
  their free slots from their leases), a newly wanted document is claimed at
  once only by the manager that rendezvous hashing weighted by free slots picks
  for it; the others wait ``placement_delay_s`` first, so the pick gets it and
  the load spreads, yet a document never waits longer than that for a manager
  that is full or gone.
- Drain (:meth:`Supervisor.drain`), make-before-break: nothing is claimed or
  started again, but the agents keep running while the other managers take
  their documents over (``claim_document()`` ends a draining manager's row
  ``drained``); a worker stops when the docserver fences it (its successor
  showed itself), or ``handoff_grace_s`` after its row was found ended elsewhere (a
  server without fencing). When no other live manager has a free slot, or
  ``drain_timeout_s`` after the drain began, what is left detaches
  (``drained``), as a lone manager's drain does at once.
  :meth:`Supervisor.hands_over_at_shutdown` says whether a stop should drain
  first (a rolling restart).
- ``idle`` -> detach. A worker reporting ``abandoned`` (a third-party server's
  fallback, off with our docserver) -> detach, and no new worker until the next
  ``active`` event.
- A worker that exits unasked is restarted after a backoff (``backoff_min_s``
  doubling to ``backoff_max_s``, reset after ``stable_s`` of uptime); more than
  ``crash_loop_restarts`` exits within ``crash_loop_window_s`` end the life with
  status ``error`` and block the document until its next visit (an ``active``
  row that is not an ``edit``).

Every life ends with one reason code (:class:`EndReason`), optionally followed
by ``": "`` and details: ``idle``, ``evicted``, ``crashed``, ``crash_loop``,
``manager_shutdown``, ``manager_restarted``, ``owned_elsewhere``, ``abandoned``,
``drained`` (and ``manager_lease_expired``, written by the database for a dead manager's rows).
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "Action",
    "Claim",
    "EndLife",
    "EndReason",
    "Kill",
    "Phase",
    "RestartPolicy",
    "Spawn",
    "Stop",
    "Supervisor",
    "wanted_from_latest",
]


class EventLike(Protocol):
    """What the supervisor reads of an activity event (``ActivityEvent`` fits)."""

    @property
    def document_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def user_count(self) -> int: ...
    @property
    def edit(self) -> bool: ...


class EndReason(enum.StrEnum):
    """Why an agent life ended: the first word of ``agent_connections.error_message``."""

    IDLE = "idle"  # the docserver wrote 'idle': everyone left
    EVICTED = "evicted"  # its slot went to a more recent document
    CRASHED = "crashed"  # exited unasked (or killed as unhealthy); restarted after a backoff
    CRASH_LOOP = "crash_loop"  # too many crashes: status 'error', blocked until the next visit
    MANAGER_SHUTDOWN = "manager_shutdown"  # its manager stopped
    MANAGER_RESTARTED = "manager_restarted"  # its manager died; ended by the next one's recovery
    OWNED_ELSEWHERE = "owned_elsewhere"  # its row was ended by someone else; the worker stopped
    ABANDONED = "abandoned"  # a third-party server's fallback: nobody seen for a long time
    #: written by the database (claim_document, sweep_expired_leases), never by a supervisor
    MANAGER_LEASE_EXPIRED = "manager_lease_expired"
    #: its manager drained (SIGUSR2, `docagents drain`, SIGTERM beside other managers)
    DRAINED = "drained"


# --- actions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndLife:
    """End the agent life's row: ``status`` is 'disconnected' or 'error'."""

    document_id: str
    agent_id: str
    status: str
    reason: str

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Claim:
    """Claim the document for a new agent life (``agent_connections`` row).

    ``supersedes``: this manager's previous life of the document, to end in the
    same statement if its end has not been written yet (it carries the real
    reason, so whichever write comes first records the same end).
    """

    document_id: str
    agent_id: str
    supersedes: EndLife | None = None


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start the worker process of a claimed life."""

    document_id: str
    agent_id: str
    restart: bool = False


@dataclass(frozen=True, slots=True)
class Stop:
    """Detach gracefully: 'detaching', shutdown message, grace, SIGTERM, SIGKILL."""

    document_id: str
    agent_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Kill:
    """Kill the worker now (unhealthy); its exit is then handled as a crash."""

    document_id: str
    agent_id: str
    reason: str


Action = Claim | Spawn | Stop | Kill | EndLife


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    stable_s: float = 60.0
    crash_loop_restarts: int = 5
    crash_loop_window_s: float = 300.0
    claim_retry_s: float = 15.0

    def backoff(self, consecutive_crashes: int) -> float:
        exponent = max(consecutive_crashes - 1, 0)
        return min(self.backoff_max_s, self.backoff_min_s * (2 ** min(exponent, 32)))

    def claim_backoff(self, consecutive_failures: int) -> float:
        """After a claim whose answer was lost: 1 s doubling, at most ``claim_retry_s``."""
        exponent = max(consecutive_failures - 1, 0)
        return min(self.claim_retry_s, 2.0 ** min(exponent, 32))


class Phase(enum.Enum):
    NO_WORKER = "no_worker"  # no life here (waiting, backing off, blocked or unwanted)
    OWNED_ELSEWHERE = "owned_elsewhere"  # wanted, but another manager's agent holds it
    CLAIMING = "claiming"  # Claim issued, no answer yet
    CLAIMED = "claimed"  # claimed; waits for its evicted victim's process to exit
    STARTING = "starting"  # Spawn issued, not connected yet
    RUNNING = "running"  # connected
    STOPPING = "stopping"  # Stop issued
    KILLING = "killing"  # Kill issued


#: Ends remembered for documents no longer tracked (their rows are written within
#: a flush interval; this only has to outlive that).
_RECENT_ENDS = 4096

#: Phases that hold a life; of those, the ones with a worker process.
_HAS_LIFE = (
    Phase.CLAIMING,
    Phase.CLAIMED,
    Phase.STARTING,
    Phase.RUNNING,
    Phase.STOPPING,
    Phase.KILLING,
)
_HAS_PROCESS = (Phase.STARTING, Phase.RUNNING, Phase.STOPPING, Phase.KILLING)
_NO_LIFE = (Phase.NO_WORKER, Phase.OWNED_ELSEWHERE)


def wanted_from_latest(event: EventLike) -> bool:
    """Whether a document is wanted, judged by its latest event alone (at start-up)."""
    if event.event_type in ("active", "user_joined"):
        return True
    return event.event_type == "user_left" and event.user_count > 0


@dataclass(slots=True)
class _Doc:
    document_id: str
    wanted: bool = False
    recency: int = 0
    phase: Phase = Phase.NO_WORKER
    agent_id: str | None = None
    started_at: float = 0.0
    connected_at: float | None = None
    #: why the current life is being stopped or killed (an EndReason code, or a
    #: description of the health failure for a Kill)
    ending_reason: str | None = None
    #: why the document is not wanted any more ('idle', 'abandoned')
    detach_reason: str = EndReason.IDLE
    #: 'abandoned' or 'crash_loop': no life until the next visit
    blocked: str | None = None
    last_error: str | None = None
    crash_times: deque[float] = field(default_factory=deque)
    consecutive_crashes: int = 0
    crashed_last: bool = False
    not_before: float = 0.0
    #: the latest life of this document that ended here (its row may not say so yet)
    last_end: EndLife | None = None
    #: an agent id whose claim answer was lost: claimed again as is, or ended
    unanswered_claim: str | None = None
    claim_failures: int = 0
    #: a live row of this manager's id that no life here knows was ended once already
    stale_owner_ended: str | None = None
    #: the manager holding the document, while OWNED_ELSEWHERE
    owner_manager_id: str | None = None
    #: the document whose worker this life's claim will evict once it succeeds
    victim: str | None = None
    #: the document whose claim will evict this worker (it is not evicted twice)
    evicted_by: str | None = None
    #: while draining: when this life's row was found ended by a successor
    handed_over_at: float | None = None

    @property
    def effectively_wanted(self) -> bool:
        return self.wanted and self.blocked is None


class Supervisor:
    """Decides; the daemon executes. All times are ``time.monotonic()`` seconds."""

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
        self.capacity = capacity
        self.min_residency_s = min_residency_s
        self.policy = policy or RestartPolicy()
        self.manager_id = manager_id
        self._new_agent_id = new_agent_id
        self._docs: dict[str, _Doc] = {}
        #: the last end of documents forgotten since (bounded): a document wanted
        #: again soon after its life ended supersedes that life's row in its claim
        self._recent_ends: OrderedDict[str, EndLife] = OrderedDict()
        self._recency = itertools.count(1)
        self._shutting_down = False
        self._holds_lease = holds_lease
        self._draining = False
        self.drain_timeout_s = drain_timeout_s
        self.handoff_grace_s = handoff_grace_s
        #: when a make-before-break drain gives up and detaches what is left
        self._drain_deadline: float | None = None
        self.placement_delay_s = placement_delay_s
        #: other live managers and their free slots (from their leases)
        self._peers: dict[str, int] = {}
        self.evictions = 0
        self.restarts = 0
        self.events_applied = 0

    # --- queries -------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Documents with a life here (claiming, claimed, starting, running or stopping)."""
        return sum(1 for d in self._docs.values() if d.phase in _HAS_LIFE)

    @property
    def workers(self) -> int:
        """Worker processes (starting, running or stopping): never above ``capacity``."""
        return sum(1 for d in self._docs.values() if d.phase in _HAS_PROCESS)

    @property
    def waiting(self) -> int:
        """Wanted documents without a life here (queued, in backoff, or owned elsewhere)."""
        return sum(1 for d in self._docs.values() if d.effectively_wanted and d.phase in _NO_LIFE)

    @property
    def owned_elsewhere(self) -> int:
        return sum(1 for d in self._docs.values() if d.phase is Phase.OWNED_ELSEWHERE)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def holds_lease(self) -> bool:
        """Whether this manager may claim (its lease is valid as far as it knows)."""
        return self._holds_lease

    def owned_elsewhere_documents(self) -> list[str]:
        """Wanted documents another manager holds (to probe whether they became free);
        none while draining or shutting down (nothing would be claimed)."""
        if self._draining or self._shutting_down:
            return []
        return [
            d.document_id
            for d in self._docs.values()
            if d.phase is Phase.OWNED_ELSEWHERE and d.effectively_wanted
        ]

    @property
    def idle(self) -> bool:
        """No life at all (after :meth:`shutdown`: everything has stopped)."""
        return self.running == 0

    def phase(self, document_id: str) -> Phase:
        doc = self._docs.get(document_id)
        return Phase.NO_WORKER if doc is None else doc.phase

    def agent_id(self, document_id: str) -> str | None:
        doc = self._docs.get(document_id)
        return None if doc is None else doc.agent_id

    def is_wanted(self, document_id: str) -> bool:
        doc = self._docs.get(document_id)
        return doc is not None and doc.effectively_wanted

    def blocked(self, document_id: str) -> str | None:
        doc = self._docs.get(document_id)
        return None if doc is None else doc.blocked

    def tracked(self) -> int:
        """Documents the supervisor holds state for (memory bound: wanted or with a life)."""
        return len(self._docs)

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

    def drain(self, now: float) -> list[Action]:
        """Take no document from now on; hand every agent over make-before-break.

        Agents keep running until a successor takes their document over (see the
        module docstring). Without another live manager with a free slot, every
        agent detaches now (``drained``). Lives without a worker yet end now.
        """
        if self._draining:
            return []
        self._draining = True
        self._drain_deadline = now + self.drain_timeout_s
        actions: list[Action] = []
        for doc in self._docs.values():
            if doc.phase is Phase.CLAIMING:
                self._release_victim(doc)  # never evict for a life that will not start
            elif doc.phase is Phase.CLAIMED and doc.agent_id is not None:
                end = EndLife(doc.document_id, doc.agent_id, "disconnected", EndReason.DRAINED)
                self._no_life(doc, end)
                actions.append(end)
            elif doc.phase in _NO_LIFE and doc.unanswered_claim is not None:
                actions.append(self._end_unanswered(doc, EndReason.DRAINED))
        return actions + self._reconcile(now)

    def hands_over_at_shutdown(self) -> bool:
        """Whether a stop (SIGTERM) should drain first: this manager holds its lease,
        runs workers, and another live manager has a free slot for them."""
        return self._holds_lease and self.workers > 0 and self._peers_have_room()

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

    def placed_here(self, document_id: str) -> bool:
        """Whether weighted rendezvous hashing over the live managers with free slots
        (weight: free slots; this manager's counted now, the others' as last renewed)
        picks this manager for the document. Without peers: always."""
        if not self._peers:
            return True
        best: tuple[float, str] | None = None
        members = [*self._peers.items(), (self.manager_id, self.capacity - self.running)]
        for manager, free in members:
            if free <= 0:
                continue
            digest = hashlib.blake2b(f"{document_id}\0{manager}".encode(), digest_size=8)
            unit = (int.from_bytes(digest.digest(), "big") + 1) / (2**64 + 1)
            score = -math.log(unit) / free
            if best is None or (score, manager) < best:
                best = (score, manager)
        return best is None or best[1] == self.manager_id

    # --- inputs: claims ------------------------------------------------------------

    def claimed(self, document_id: str, agent_id: str, now: float) -> list[Action]:
        """The life's row exists (``claim_document`` said so)."""
        doc = self._life(document_id, agent_id)
        if doc is None or doc.phase is not Phase.CLAIMING:
            return []
        doc.unanswered_claim = None
        doc.claim_failures = 0
        doc.last_end = None  # superseded in the same statement
        doc.owner_manager_id = None
        victim = self._release_victim(doc)
        if self._shutting_down or not doc.effectively_wanted:
            reason = EndReason.MANAGER_SHUTDOWN if self._shutting_down else self._detach_reason(doc)
            end = EndLife(document_id, agent_id, "disconnected", str(reason))
            self._no_life(doc, end)
            return [end, *self._reconcile(now)]
        actions: list[Action] = []
        if victim is not None and victim.phase in (Phase.STARTING, Phase.RUNNING):
            self.evictions += 1
            actions.append(self._stop(victim, EndReason.EVICTED))
        doc.phase = Phase.CLAIMED
        return actions + self._reconcile(now)

    def claim_refused(
        self,
        document_id: str,
        agent_id: str,
        *,
        owner_manager_id: str,
        owner_agent_id: str,
        now: float,
    ) -> list[Action]:
        """The document has a live row that is not this life's."""
        doc = self._life(document_id, agent_id)
        if doc is None or doc.phase is not Phase.CLAIMING:
            return []
        doc.unanswered_claim = None
        doc.claim_failures = 0
        doc.last_end = None
        doc.agent_id = None
        doc.ending_reason = None
        self._release_victim(doc)
        if owner_agent_id == agent_id:
            # This very life's row, already ended (by recovery or by hand): a new life.
            doc.phase = Phase.NO_WORKER
            doc.not_before = now
        elif owner_manager_id == self.manager_id and doc.stale_owner_ended != owner_agent_id:
            # A row of this manager's id that no life here knows (left over from a
            # run whose recovery missed it): end it with the next claim, at once.
            doc.stale_owner_ended = owner_agent_id
            doc.last_end = EndLife(
                document_id,
                owner_agent_id,
                "disconnected",
                f"{EndReason.MANAGER_RESTARTED}: stale row found by a claim",
            )
            doc.phase = Phase.NO_WORKER
            doc.not_before = now
        else:
            doc.phase = Phase.OWNED_ELSEWHERE
            doc.owner_manager_id = owner_manager_id
            doc.not_before = now + self.policy.claim_retry_s
        self._forget_if_unused(doc)
        return self._reconcile(now)

    def claim_unanswered(
        self, document_id: str, agent_id: str, reason: str, now: float
    ) -> list[Action]:
        """The claim failed or its answer was lost: the row may or may not exist."""
        doc = self._life(document_id, agent_id)
        if doc is None or doc.phase is not Phase.CLAIMING:
            return []
        doc.phase = Phase.NO_WORKER
        doc.agent_id = None
        doc.ending_reason = None
        self._release_victim(doc)
        doc.unanswered_claim = agent_id
        doc.claim_failures += 1
        doc.not_before = now + self.policy.claim_backoff(doc.claim_failures)
        doc.last_error = reason[:500]
        return self._reconcile(now)

    # --- inputs: workers -----------------------------------------------------------

    def worker_connected(self, document_id: str, agent_id: str, now: float) -> list[Action]:
        doc = self._life(document_id, agent_id)
        if doc is not None and doc.phase is Phase.STARTING:
            doc.phase = Phase.RUNNING
            doc.connected_at = now
        return []

    def worker_activity(
        self, document_id: str, agent_id: str, kind: str, now: float
    ) -> list[Action]:
        """A worker's ``activity`` report: ``edit`` (recency) or ``abandoned`` (detach)."""
        doc = self._life(document_id, agent_id)
        if doc is None:
            return []
        if kind == "abandoned":
            doc.blocked = EndReason.ABANDONED
            return self._reconcile(now)
        if kind == "fenced":  # the docserver retired it: a newer life holds the document
            if self._draining:
                return self._handed_over(doc, now, fenced=True)
            return self.row_ended_elsewhere(document_id, agent_id, now)
        doc.recency = next(self._recency)
        return []

    def worker_error(self, document_id: str, agent_id: str, message: str) -> None:
        doc = self._life(document_id, agent_id)
        if doc is not None:
            doc.last_error = message[:500]

    def worker_unhealthy(
        self, document_id: str, agent_id: str, reason: str, now: float
    ) -> list[Action]:
        """No pong in time, or garbage on the pipe: kill it (restarted as after a crash)."""
        doc = self._life(document_id, agent_id)
        if doc is None or doc.phase not in (Phase.STARTING, Phase.RUNNING):
            return []
        doc.phase = Phase.KILLING
        doc.ending_reason = reason
        return [Kill(document_id, agent_id, reason)]

    def row_ended_elsewhere(self, document_id: str, agent_id: str, now: float) -> list[Action]:
        """The life's row was ended by someone else (another manager, an operator)."""
        doc = self._life(document_id, agent_id)
        if doc is None or doc.phase not in (Phase.STARTING, Phase.RUNNING):
            return []
        if self._draining:
            return self._handed_over(doc, now, fenced=False)
        doc.not_before = now + self.policy.claim_retry_s
        return [self._stop(doc, EndReason.OWNED_ELSEWHERE)]

    def working_lives(self) -> set[str]:
        """Agent ids of the lives with a starting or running worker (for an audit)."""
        return {
            d.agent_id
            for d in self._docs.values()
            if d.agent_id is not None and d.phase in (Phase.STARTING, Phase.RUNNING)
        }

    def rows_audited(self, checked: set[str], live: set[str], now: float) -> list[Action]:
        """The live rows of this manager were read: ``checked`` lives (working when the
        read began) whose row is not among ``live`` were ended by someone else."""
        actions: list[Action] = []
        for doc in list(self._docs.values()):
            agent = doc.agent_id
            if agent is not None and agent in checked and agent not in live:
                actions += self.row_ended_elsewhere(doc.document_id, agent, now)
        return actions

    def worker_exited(
        self, document_id: str, agent_id: str, description: str, now: float
    ) -> list[Action]:
        """The worker process is gone (asked to or not); ``description`` says how."""
        doc = self._life(document_id, agent_id)
        if doc is None or doc.phase not in (
            Phase.STARTING,
            Phase.RUNNING,
            Phase.STOPPING,
            Phase.KILLING,
        ):
            return []
        if doc.phase is Phase.STOPPING:
            reason = doc.ending_reason or str(self._detach_reason(doc))
            end = EndLife(document_id, agent_id, "disconnected", reason)
            doc.crashed_last = False
        else:
            if doc.ending_reason is not None:
                detail = doc.ending_reason
            elif doc.last_error:
                detail = f"{description}; last error: {doc.last_error}"
            else:
                detail = description
            end = self._crashed(doc, agent_id, detail, now)
        self._no_life(doc, end)
        return [end, *self._reconcile(now)]

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
            elif doc.phase in _NO_LIFE and doc.unanswered_claim is not None:
                actions.append(self._end_unanswered(doc, EndReason.MANAGER_SHUTDOWN))
        return actions

    # --- internals -----------------------------------------------------------------

    def _doc(self, document_id: str) -> _Doc:
        doc = self._docs.get(document_id)
        if doc is None:
            doc = self._docs[document_id] = _Doc(document_id)
            doc.last_end = self._recent_ends.pop(document_id, None)
        return doc

    def _life(self, document_id: str, agent_id: str) -> _Doc | None:
        doc = self._docs.get(document_id)
        if doc is None or doc.agent_id != agent_id:
            return None  # a report of an earlier life
        return doc

    def _release_victim(self, doc: _Doc) -> _Doc | None:
        """Forget whom ``doc``'s claim was going to evict; returns that document."""
        name, doc.victim = doc.victim, None
        victim = None if name is None else self._docs.get(name)
        if victim is not None and victim.evicted_by == doc.document_id:
            victim.evicted_by = None
            return victim
        return None

    def _spawn(self, doc: _Doc) -> Spawn:
        assert doc.agent_id is not None
        doc.phase = Phase.STARTING
        restart = doc.crashed_last
        if restart:
            self.restarts += 1
        return Spawn(doc.document_id, doc.agent_id, restart=restart)

    def _detach_reason(self, doc: _Doc) -> str:
        return str(doc.blocked if doc.blocked is not None else doc.detach_reason)

    def _no_life(self, doc: _Doc, end: EndLife) -> None:
        self._release_victim(doc)
        if doc.evicted_by is not None:
            # The life that was to evict this one takes its slot as its own now.
            borrower = self._docs.get(doc.evicted_by)
            if borrower is not None and borrower.victim == doc.document_id:
                borrower.victim = None
            doc.evicted_by = None
        doc.phase = Phase.NO_WORKER
        doc.agent_id = None
        doc.connected_at = None
        doc.ending_reason = None
        doc.last_error = None
        doc.handed_over_at = None
        doc.last_end = end

    def _end_unanswered(self, doc: _Doc, reason: str) -> EndLife:
        """End a life whose claim answer was lost (a no-op if it has no row)."""
        assert doc.unanswered_claim is not None
        end = EndLife(doc.document_id, doc.unanswered_claim, "disconnected", str(reason))
        doc.unanswered_claim = None
        doc.claim_failures = 0
        doc.last_end = end
        return end

    def _forget_if_unused(self, doc: _Doc) -> None:
        if not doc.wanted and doc.phase in _NO_LIFE and doc.unanswered_claim is None:
            del self._docs[doc.document_id]
            if doc.last_end is not None:
                self._recent_ends[doc.document_id] = doc.last_end
                self._recent_ends.move_to_end(doc.document_id)
                while len(self._recent_ends) > _RECENT_ENDS:
                    self._recent_ends.popitem(last=False)

    def _crashed(self, doc: _Doc, agent_id: str, detail: str, now: float) -> EndLife:
        policy = self.policy
        if doc.connected_at is not None and now - doc.connected_at >= policy.stable_s:
            doc.consecutive_crashes = 0
        doc.crash_times.append(now)
        while doc.crash_times and doc.crash_times[0] < now - policy.crash_loop_window_s:
            doc.crash_times.popleft()
        crashed = f"{EndReason.CRASHED}: {detail}"
        if not doc.effectively_wanted:
            return EndLife(doc.document_id, agent_id, "disconnected", crashed)
        if len(doc.crash_times) > policy.crash_loop_restarts:
            doc.blocked = EndReason.CRASH_LOOP
            return EndLife(
                doc.document_id,
                agent_id,
                "error",
                f"{EndReason.CRASH_LOOP}: {len(doc.crash_times)} exits within "
                f"{policy.crash_loop_window_s:g} s, not restarting until the next "
                f"visit; last: {detail}",
            )
        doc.consecutive_crashes += 1
        doc.crashed_last = True
        doc.not_before = now + policy.backoff(doc.consecutive_crashes)
        return EndLife(doc.document_id, agent_id, "disconnected", crashed)

    def _claim(self, doc: _Doc, now: float) -> Claim:
        agent_id = doc.unanswered_claim or self._new_agent_id()
        doc.phase = Phase.CLAIMING
        doc.agent_id = agent_id
        doc.started_at = now
        doc.connected_at = None
        doc.ending_reason = None
        return Claim(doc.document_id, agent_id, supersedes=doc.last_end)

    def _stop(self, doc: _Doc, reason: str) -> Stop:
        assert doc.agent_id is not None
        doc.phase = Phase.STOPPING
        doc.ending_reason = str(reason)
        return Stop(doc.document_id, doc.agent_id, str(reason))

    # --- draining --------------------------------------------------------------------

    def _peers_have_room(self) -> bool:
        return any(free > 0 for free in self._peers.values())

    def _handed_over(self, doc: _Doc, now: float, *, fenced: bool) -> list[Action]:
        """While draining, a successor holds the document: stop this worker once the
        docserver fenced it, or after ``handoff_grace_s`` (no fencing server)."""
        if doc.phase not in (Phase.STARTING, Phase.RUNNING):
            return []
        if doc.handed_over_at is None:
            doc.handed_over_at = now
        if fenced or now >= doc.handed_over_at + self.handoff_grace_s:
            return [self._stop(doc, EndReason.DRAINED)]
        return []

    def _drain_next_deadline(self) -> float | None:
        """While draining: the drain's deadline and the handed-over workers' graces."""
        deadlines: list[float] = []
        for d in self._docs.values():
            if d.phase is Phase.STARTING or d.phase is Phase.RUNNING:
                if self._drain_deadline is not None:
                    deadlines.append(self._drain_deadline)
                if d.handed_over_at is not None:
                    deadlines.append(d.handed_over_at + self.handoff_grace_s)
        return min(deadlines, default=None)

    def _reconcile_draining(self, now: float) -> list[Action]:
        """While draining: no claims, no spawns; a claim answered now ends at once.

        Workers keep running for their successors, except an unwanted one (it
        detaches as usual), one whose handover grace ended, and all of them once
        the drain's deadline passed or no other live manager has a free slot.
        """
        actions: list[Action] = []
        give_up = not self._peers_have_room() or (
            self._drain_deadline is not None and now >= self._drain_deadline
        )
        for doc in list(self._docs.values()):
            if doc.phase is Phase.CLAIMED and doc.agent_id is not None:
                end = EndLife(doc.document_id, doc.agent_id, "disconnected", EndReason.DRAINED)
                self._no_life(doc, end)
                actions.append(end)
            if doc.phase in (Phase.STARTING, Phase.RUNNING):
                if not doc.effectively_wanted:
                    actions.append(self._stop(doc, self._detach_reason(doc)))
                elif give_up:
                    actions.append(self._stop(doc, EndReason.DRAINED))
                elif doc.handed_over_at is not None:
                    actions += self._handed_over(doc, now, fenced=False)
            if doc.phase in _NO_LIFE:
                if doc.unanswered_claim is not None:
                    actions.append(self._end_unanswered(doc, EndReason.DRAINED))
                self._forget_if_unused(doc)
        return actions

    def _reconcile(self, now: float) -> list[Action]:
        if self._shutting_down:
            return []
        if self._draining:
            return self._reconcile_draining(now)
        actions: list[Action] = []
        processes = 0
        used = 0  # slots taken: processes, and claims that evict nobody
        terminating = 0
        evictable: list[_Doc] = []
        candidates: list[_Doc] = []
        claimed: list[_Doc] = []
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
            if phase in _HAS_PROCESS:
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
        free = self.capacity - used
        candidates.sort(key=lambda d: d.recency, reverse=True)
        evictable.sort(key=lambda d: d.recency)
        victims = iter(evictable)
        for doc in candidates:
            if free > 0:
                actions.append(self._claim(doc, now))
                free -= 1
                continue
            if doc.phase is Phase.OWNED_ELSEWHERE:
                continue  # never evict for a document another manager holds
            if terminating > 0:
                terminating -= 1  # a slot is about to free up; it goes to the most recent
                continue
            victim = next(victims, None)
            if victim is None or victim.recency >= doc.recency:
                break
            # Claim first; the victim is stopped only once the claim succeeds, so a
            # document this manager cannot get never costs a running agent.
            claim = self._claim(doc, now)
            doc.victim = victim.document_id
            victim.evicted_by = doc.document_id
            actions.append(claim)
        return actions
