"""What the supervisor knows of each document: its phase, its life, its history.

One document, as this manager sees it (:class:`Phase`)::

    NO_WORKER --wanted, slot--> CLAIMING --claimed--> STARTING --connected--> RUNNING
        ^  ^                     |   |                   |                      |
        |  |   refused by another|   |answer lost        +------ Stop ----------+--> STOPPING
        |  |   manager's live row|   |(retry, same id)   +------ Kill ----------+--> KILLING
        |  +-- OWNED_ELSEWHERE <-+   v                                               |
        |      (retried into a   NO_WORKER                               exit: EndLife
        |       free slot only)                                                      |
        +----------------------------------------------------------------------------+

``docs/lifecycle.md`` draws the same machine with the docserver's side and the
``agent_connections`` statuses.

:class:`DocumentBook` holds a :class:`DocumentState` only for documents that are
wanted or have a life (memory stays bounded by those) and keeps the books of
lives: which report belongs to the current life, what a life's end resets, when
a document is forgotten. It decides nothing; the
:class:`~manager.supervise.supervisor.Supervisor` built on it does. Pure: no I/O,
imports only :mod:`manager.supervise.actions`.
"""

from __future__ import annotations

import enum
import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Protocol

from manager.supervise.actions import EndLife, EndReason

__all__ = [
    "HAS_LIFE",
    "HAS_PROCESS",
    "NO_LIFE",
    "DocumentBook",
    "DocumentState",
    "EventLike",
    "Phase",
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


def wanted_from_latest(event: EventLike) -> bool:
    """Whether a document is wanted, judged by its latest event alone (at start-up)."""
    if event.event_type in ("active", "user_joined"):
        return True
    return event.event_type == "user_left" and event.user_count > 0


class Phase(enum.Enum):
    """Where a document's life stands on this manager (the module docstring draws it)."""

    NO_WORKER = "no_worker"  # no life here (waiting, backing off, blocked or unwanted)
    OWNED_ELSEWHERE = "owned_elsewhere"  # wanted, but another manager's agent holds it
    CLAIMING = "claiming"  # Claim issued, no answer yet
    CLAIMED = "claimed"  # claimed; waits for its evicted victim's process to exit
    STARTING = "starting"  # Spawn issued, not connected yet
    RUNNING = "running"  # connected
    STOPPING = "stopping"  # Stop issued
    KILLING = "killing"  # Kill issued


#: Phases that hold a life; of those, the ones with a worker process; the others.
HAS_LIFE = (
    Phase.CLAIMING,
    Phase.CLAIMED,
    Phase.STARTING,
    Phase.RUNNING,
    Phase.STOPPING,
    Phase.KILLING,
)
HAS_PROCESS = (Phase.STARTING, Phase.RUNNING, Phase.STOPPING, Phase.KILLING)
NO_LIFE = (Phase.NO_WORKER, Phase.OWNED_ELSEWHERE)

#: Ends remembered for documents no longer tracked (their rows are written within
#: a flush interval; this only has to outlive that).
_RECENT_ENDS = 4096


@dataclass(slots=True)
class DocumentState:
    """One tracked document: whether it is wanted, its current life, its crash history."""

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


class DocumentBook:
    """The tracked documents, their counts, and the books of their lives."""

    def __init__(self) -> None:
        self._docs: dict[str, DocumentState] = {}
        #: the last end of documents forgotten since (bounded): a document wanted
        #: again soon after its life ended supersedes that life's row in its claim
        self._recent_ends: OrderedDict[str, EndLife] = OrderedDict()
        #: recency stamps: a higher one is a later sign of people at work
        self._recency = itertools.count(1)

    # --- queries -------------------------------------------------------------------

    @property
    def lives(self) -> int:
        """Documents with a life here (claiming, claimed, starting, running, stopping
        or killing): what the lease reports as this manager's agents. Above the
        capacity only by claims that will evict a worker."""
        return sum(1 for d in self._docs.values() if d.phase in HAS_LIFE)

    @property
    def workers(self) -> int:
        """Worker processes (starting, running, stopping or killing): never above the
        capacity."""
        return sum(1 for d in self._docs.values() if d.phase in HAS_PROCESS)

    @property
    def waiting(self) -> int:
        """Wanted documents without a life here (queued, in backoff, or owned elsewhere)."""
        return sum(1 for d in self._docs.values() if d.effectively_wanted and d.phase in NO_LIFE)

    @property
    def owned_elsewhere(self) -> int:
        """Documents whose claim found another manager's live row."""
        return sum(1 for d in self._docs.values() if d.phase is Phase.OWNED_ELSEWHERE)

    def owned_elsewhere_documents(self) -> list[str]:
        """Wanted documents another manager holds (to probe whether they became free)."""
        return [
            d.document_id
            for d in self._docs.values()
            if d.phase is Phase.OWNED_ELSEWHERE and d.effectively_wanted
        ]

    def working_lives(self) -> set[str]:
        """Agent ids of the lives with a starting or running worker (for an audit)."""
        return {
            d.agent_id
            for d in self._docs.values()
            if d.agent_id is not None and d.phase in (Phase.STARTING, Phase.RUNNING)
        }

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
        """Why the document gets no life until its next visit, if it is blocked."""
        doc = self._docs.get(document_id)
        return None if doc is None else doc.blocked

    def tracked(self) -> int:
        """Documents the supervisor holds state for (memory bound: wanted or with a life)."""
        return len(self._docs)

    # --- the books -----------------------------------------------------------------

    def _doc(self, document_id: str) -> DocumentState:
        """The document's state, tracked from now on (with its recent end, if any)."""
        doc = self._docs.get(document_id)
        if doc is None:
            doc = self._docs[document_id] = DocumentState(document_id)
            doc.last_end = self._recent_ends.pop(document_id, None)
        return doc

    def _life(self, document_id: str, agent_id: str) -> DocumentState | None:
        """The document's state if ``agent_id`` is its current life, else None."""
        doc = self._docs.get(document_id)
        if doc is None or doc.agent_id != agent_id:
            return None  # a report of an earlier life
        return doc

    def _release_victim(self, doc: DocumentState) -> DocumentState | None:
        """Forget whom ``doc``'s claim was going to evict; returns that document."""
        name, doc.victim = doc.victim, None
        victim = None if name is None else self._docs.get(name)
        if victim is not None and victim.evicted_by == doc.document_id:
            victim.evicted_by = None
            return victim
        return None

    def _no_life(self, doc: DocumentState, end: EndLife) -> None:
        """The current life ended with ``end``: the document has no life here now."""
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

    def _end_unanswered(self, doc: DocumentState, reason: str) -> EndLife:
        """End a life whose claim answer was lost (a no-op if it has no row)."""
        assert doc.unanswered_claim is not None
        end = EndLife(doc.document_id, doc.unanswered_claim, "disconnected", str(reason))
        doc.unanswered_claim = None
        doc.claim_failures = 0
        doc.last_end = end
        return end

    def _forget_if_unused(self, doc: DocumentState) -> None:
        """Stop tracking a document that is neither wanted nor holds a life or a claim."""
        if not doc.wanted and doc.phase in NO_LIFE and doc.unanswered_claim is None:
            del self._docs[doc.document_id]
            if doc.last_end is not None:
                self._recent_ends[doc.document_id] = doc.last_end
                self._recent_ends.move_to_end(doc.document_id)
                while len(self._recent_ends) > _RECENT_ENDS:
                    self._recent_ends.popitem(last=False)
