"""The supervisor's decision core: which documents get a worker, and when.

Pure code (STYLE.md, "Sans-IO cores"): the daemon feeds it what happened
(activity events, worker reports and exits, the clock) and executes the
actions it returns (:class:`Start`, :class:`Stop`, :class:`Kill`,
:class:`EndLife`). It never sleeps, never does I/O, and holds state only for
documents that are wanted or have a worker, so memory stays bounded by those.

Rules (issue 5):

- A document is *wanted* while its latest event is ``active`` (``user_joined``
  also means someone is there; ``idle`` ends it). A batch of events is applied
  as a whole before deciding, so a storm of events for one document costs no
  process churn.
- At most ``capacity`` workers (starting, running or stopping) at any time.
- Recency: every activity event and every ``activity`` report of a worker makes
  its document the most recent. A waiting document evicts the least recently
  active worker only if that worker is less recent than it and older than
  ``min_residency_s``; the evicted document stays wanted and waits. A freed
  slot goes to the most recently active waiting document.
- ``idle`` -> detach. A worker reporting ``abandoned`` -> detach, and no new
  worker until the next ``active`` event.
- A worker that exits without being asked is restarted after a backoff
  (``backoff_min_s`` doubling to ``backoff_max_s``, reset after ``stable_s`` of
  uptime); more than ``crash_loop_restarts`` crashes within
  ``crash_loop_window_s`` ends the life with status ``error`` and blocks the
  document until its next ``active`` event.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "Action",
    "EndLife",
    "Kill",
    "Phase",
    "RestartPolicy",
    "Start",
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


# --- actions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Claim the document for a new agent life and start its worker."""

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


@dataclass(frozen=True, slots=True)
class EndLife:
    """End the agent life's row: ``status`` is 'disconnected' or 'error'."""

    document_id: str
    agent_id: str
    status: str
    reason: str


Action = Start | Stop | Kill | EndLife


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


class Phase(enum.Enum):
    IDLE = "idle"  # no worker
    STARTING = "starting"  # Start issued, not connected yet
    RUNNING = "running"  # connected
    STOPPING = "stopping"  # Stop issued
    KILLING = "killing"  # Kill issued


_HAS_WORKER = (Phase.STARTING, Phase.RUNNING, Phase.STOPPING, Phase.KILLING)


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
    phase: Phase = Phase.IDLE
    agent_id: str | None = None
    started_at: float = 0.0
    connected_at: float | None = None
    #: why the current worker is being stopped or killed
    ending_reason: str | None = None
    #: why the document is not wanted any more ('idle', 'abandoned')
    detach_reason: str = "idle"
    #: 'abandoned' or 'error': no worker until the next 'active' event
    blocked: str | None = None
    last_error: str | None = None
    crash_times: deque[float] = field(default_factory=deque)
    consecutive_crashes: int = 0
    crashed_last: bool = False
    not_before: float = 0.0

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
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.min_residency_s = min_residency_s
        self.policy = policy or RestartPolicy()
        self._new_agent_id = new_agent_id
        self._docs: dict[str, _Doc] = {}
        self._recency = itertools.count(1)
        self._shutting_down = False
        self.evictions = 0
        self.restarts = 0
        self.events_applied = 0

    # --- queries -------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Documents with a worker process (starting, running or stopping)."""
        return sum(1 for d in self._docs.values() if d.phase in _HAS_WORKER)

    @property
    def waiting(self) -> int:
        """Wanted documents without a worker (queued, in backoff, or owned elsewhere)."""
        return sum(1 for d in self._docs.values() if d.effectively_wanted and d.phase is Phase.IDLE)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    @property
    def idle(self) -> bool:
        """No worker at all (after :meth:`shutdown`: everything has stopped)."""
        return self.running == 0

    def phase(self, document_id: str) -> Phase:
        doc = self._docs.get(document_id)
        return Phase.IDLE if doc is None else doc.phase

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
        """Documents the supervisor holds state for (memory bound: wanted or with a worker)."""
        return len(self._docs)

    def next_deadline(self, now: float) -> float | None:
        """When :meth:`tick` may have something new to do (a backoff or a residency ends).

        One pass: it runs after every dispatch, with hundreds of documents.
        """
        if self._shutting_down:
            return None
        backoff: float | None = None
        residency: float | None = None
        ready_waiting = False
        for d in self._docs.values():
            phase = d.phase
            if phase is Phase.IDLE:
                if d.effectively_wanted:
                    if d.not_before > now:
                        backoff = d.not_before if backoff is None else min(backoff, d.not_before)
                    else:
                        ready_waiting = True
            elif phase is Phase.STARTING or phase is Phase.RUNNING:
                ends = d.started_at + self.min_residency_s
                if ends > now:
                    residency = ends if residency is None else min(residency, ends)
        # A residency ending matters only to a document waiting for a slot.
        deadlines = [t for t in (backoff, residency if ready_waiting else None) if t is not None]
        return min(deadlines, default=None)

    # --- inputs --------------------------------------------------------------------

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
                    doc.detach_reason = "idle"
                    self._forget_if_unused(doc)
                continue
            if kind not in ("active", "user_joined", "user_left"):
                continue  # unknown types cannot reach us (CHECK), but never crash on one
            if kind == "user_left" and event.document_id not in self._docs:
                continue
            doc = self._doc(event.document_id)
            doc.recency = next(self._recency)
            if kind == "active":
                doc.wanted = True
                if doc.blocked is not None:
                    if doc.blocked == "error":
                        doc.crash_times.clear()
                        doc.consecutive_crashes = 0
                        doc.not_before = 0.0
                    doc.blocked = None
            elif kind == "user_joined":
                doc.wanted = True
        return self._reconcile(now)

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
            doc.blocked = "abandoned"
            doc.detach_reason = "abandoned"
            return self._reconcile(now)
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

    def claim_failed(
        self, document_id: str, agent_id: str, reason: str, now: float
    ) -> list[Action]:
        """The claim did not give us the document (another owner, or no database)."""
        doc = self._life(document_id, agent_id)
        if doc is None:
            return []
        doc.phase = Phase.IDLE
        doc.agent_id = None
        doc.not_before = now + self.policy.claim_retry_s
        doc.last_error = reason
        self._forget_if_unused(doc)
        return self._reconcile(now)

    def worker_exited(
        self, document_id: str, agent_id: str, description: str, now: float
    ) -> list[Action]:
        """The worker process is gone (asked to or not); ``description`` says how."""
        doc = self._life(document_id, agent_id)
        if doc is None or doc.phase is Phase.IDLE:
            return []
        actions: list[Action] = []
        if doc.phase is Phase.STOPPING:
            actions.append(
                EndLife(document_id, agent_id, "disconnected", doc.ending_reason or "detached")
            )
            doc.crashed_last = False
        else:
            reason = doc.ending_reason or description
            if doc.ending_reason is None and doc.last_error:
                reason = f"{description}; last error: {doc.last_error}"
            actions.append(self._crashed(doc, agent_id, reason, now))
        doc.phase = Phase.IDLE
        doc.agent_id = None
        doc.connected_at = None
        doc.ending_reason = None
        doc.last_error = None
        self._forget_if_unused(doc)
        return actions + self._reconcile(now)

    def tick(self, now: float) -> list[Action]:
        """Time passed: backoffs and residencies may have ended."""
        return self._reconcile(now)

    def shutdown(self) -> list[Action]:
        """Stop every worker; start none from now on."""
        self._shutting_down = True
        actions: list[Action] = []
        for doc in self._docs.values():
            if doc.phase in (Phase.STARTING, Phase.RUNNING) and doc.agent_id is not None:
                doc.phase = Phase.STOPPING
                doc.ending_reason = "manager shutdown"
                actions.append(Stop(doc.document_id, doc.agent_id, "manager shutdown"))
        return actions

    # --- internals -----------------------------------------------------------------

    def _doc(self, document_id: str) -> _Doc:
        doc = self._docs.get(document_id)
        if doc is None:
            doc = self._docs[document_id] = _Doc(document_id)
        return doc

    def _life(self, document_id: str, agent_id: str) -> _Doc | None:
        doc = self._docs.get(document_id)
        if doc is None or doc.agent_id != agent_id:
            return None  # a report of an earlier life
        return doc

    def _forget_if_unused(self, doc: _Doc) -> None:
        if not doc.wanted and doc.phase is Phase.IDLE:
            del self._docs[doc.document_id]

    def _crashed(self, doc: _Doc, agent_id: str, reason: str, now: float) -> EndLife:
        policy = self.policy
        if doc.connected_at is not None and now - doc.connected_at >= policy.stable_s:
            doc.consecutive_crashes = 0
        doc.crash_times.append(now)
        while doc.crash_times and doc.crash_times[0] < now - policy.crash_loop_window_s:
            doc.crash_times.popleft()
        if not doc.effectively_wanted:
            return EndLife(doc.document_id, agent_id, "disconnected", reason)
        if len(doc.crash_times) > policy.crash_loop_restarts:
            doc.blocked = "error"
            return EndLife(
                doc.document_id,
                agent_id,
                "error",
                f"crash loop: {len(doc.crash_times)} exits within "
                f"{policy.crash_loop_window_s:g} s, not restarting until the next "
                f"'active' event; last: {reason}",
            )
        doc.consecutive_crashes += 1
        doc.crashed_last = True
        doc.not_before = now + policy.backoff(doc.consecutive_crashes)
        return EndLife(doc.document_id, agent_id, "disconnected", reason)

    def _start(self, doc: _Doc, now: float) -> Start:
        agent_id = self._new_agent_id()
        doc.phase = Phase.STARTING
        doc.agent_id = agent_id
        doc.started_at = now
        doc.connected_at = None
        doc.ending_reason = None
        restart = doc.crashed_last
        if restart:
            self.restarts += 1
        return Start(doc.document_id, agent_id, restart=restart)

    def _stop(self, doc: _Doc, reason: str) -> Stop:
        assert doc.agent_id is not None
        doc.phase = Phase.STOPPING
        doc.ending_reason = reason
        return Stop(doc.document_id, doc.agent_id, reason)

    def _reconcile(self, now: float) -> list[Action]:
        if self._shutting_down:
            return []
        actions: list[Action] = []
        workers = 0
        terminating = 0
        evictable: list[_Doc] = []
        candidates: list[_Doc] = []
        for doc in self._docs.values():
            if doc.phase in (Phase.STARTING, Phase.RUNNING) and not doc.effectively_wanted:
                actions.append(
                    self._stop(doc, doc.detach_reason if doc.blocked is None else doc.blocked)
                )
            if doc.phase in _HAS_WORKER:
                workers += 1
                if doc.phase in (Phase.STOPPING, Phase.KILLING):
                    terminating += 1
                elif now - doc.started_at >= self.min_residency_s:
                    evictable.append(doc)
            elif doc.effectively_wanted and doc.not_before <= now:
                candidates.append(doc)
        if not candidates:
            return actions
        free = self.capacity - workers
        candidates.sort(key=lambda d: d.recency, reverse=True)
        evictable.sort(key=lambda d: d.recency)
        victims = iter(evictable)
        for doc in candidates:
            if free > 0:
                actions.append(self._start(doc, now))
                free -= 1
                continue
            if terminating > 0:
                terminating -= 1  # a slot is about to free up; it goes to the most recent
                continue
            victim = next(victims, None)
            if victim is None or victim.recency >= doc.recency:
                break
            self.evictions += 1
            actions.append(self._stop(victim, "evicted"))
        return actions
