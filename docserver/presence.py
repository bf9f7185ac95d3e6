"""Human presence per document -> activity rows, as a pure state machine.

:class:`PresenceTracker` takes events (a human joined or left, a grace timer
fired, the documents found 'active' at start-up) and returns actions (write an
activity row, start a grace timer). It does no I/O and reads no clock, so every
rule is unit-tested; :mod:`docserver.service` drives it.

Per document::

    (absent) --join--> active --last leaves--> leaving --grace expired--> (absent) + 'idle'
                          ^                       |
                          +------rejoin-----------+   (no new 'active': the row still holds)

A grace timer carries the document's generation when it was started; joining or
leaving bumps the generation, so a stale timer is ignored instead of cancelled.

Agents are counted apart and never make a document active. They matter for one
thing: while people edit a document that has no agent connected (it waits for a
slot, or its agent is restarting), the tracker writes an extra 'active' row
marked ``reason: edit``, at most one per ``edit_interval_s`` per document. The
manager reads it as "people are working here" (recency), so a waiting document
where people type is served before documents where nobody types. A document with
its agent connected writes no such rows: the agent reports edits itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Action", "EventType", "PresenceTracker", "Record", "StartGrace"]

#: The ``event_type`` values the docserver writes to document_activity.
EventType = Literal["active", "idle", "user_joined", "user_left"]


@dataclass(frozen=True, slots=True)
class Record:
    """Write one document_activity row (``reason`` goes into its metadata)."""

    document_id: str
    event_type: EventType
    user_count: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StartGrace:
    """Call :meth:`PresenceTracker.grace_expired` with these values after ``delay_s``."""

    document_id: str
    generation: int
    delay_s: float


Action = Record | StartGrace


@dataclass(slots=True)
class _Document:
    humans: int = 0
    generation: int = 0
    #: when the latest row that told the manager people are here was written
    signalled_at: float | None = None


class PresenceTracker:
    """Who is connected to each document (people and agents apart), and the rows that follow."""

    def __init__(
        self, *, grace_s: float, record_joins: bool = False, edit_interval_s: float = 10.0
    ) -> None:
        self._grace_s = grace_s
        self._record_joins = record_joins
        self._edit_interval_s = edit_interval_s
        self._documents: dict[str, _Document] = {}
        self._agents: dict[str, int] = {}

    def humans(self, document_id: str) -> int:
        entry = self._documents.get(document_id)
        return entry.humans if entry else 0

    def tracked(self) -> set[str]:
        """Documents that are active or inside their grace."""
        return set(self._documents)

    def agents(self, document_id: str) -> int:
        return self._agents.get(document_id, 0)

    def agent_joined(self, document_id: str) -> None:
        self._agents[document_id] = self._agents.get(document_id, 0) + 1

    def agent_left(self, document_id: str) -> None:
        left = self._agents.get(document_id, 0) - 1
        if left > 0:
            self._agents[document_id] = left
        else:
            self._agents.pop(document_id, None)

    def human_edited(self, document_id: str, now: float) -> list[Action]:
        """A person changed the document; ``now`` is any monotonic clock in seconds."""
        entry = self._documents.get(document_id)
        if entry is None or entry.humans == 0 or self._agents.get(document_id):
            return []
        if entry.signalled_at is not None and now - entry.signalled_at < self._edit_interval_s:
            return []
        entry.signalled_at = now
        return [Record(document_id, "active", entry.humans, reason="edit")]

    def human_joined(self, document_id: str, now: float | None = None) -> list[Action]:
        entry = self._documents.get(document_id)
        actions: list[Action] = []
        if entry is None:
            entry = self._documents[document_id] = _Document()
            entry.humans = 1
            entry.signalled_at = now
            actions.append(Record(document_id, "active", 1))
        else:
            entry.humans += 1
            entry.generation += 1  # a pending grace (if any) is now stale
        if self._record_joins:
            actions.append(Record(document_id, "user_joined", entry.humans))
        return actions

    def human_left(self, document_id: str) -> list[Action]:
        entry = self._documents.get(document_id)
        if entry is None or entry.humans == 0:
            return []  # not counted (cannot happen when joins and leaves pair up)
        entry.humans -= 1
        actions: list[Action] = []
        if self._record_joins:
            actions.append(Record(document_id, "user_left", entry.humans))
        if entry.humans == 0:
            entry.generation += 1
            actions.append(StartGrace(document_id, entry.generation, self._grace_s))
        return actions

    def grace_expired(self, document_id: str, generation: int) -> list[Action]:
        entry = self._documents.get(document_id)
        if entry is None or entry.humans > 0 or entry.generation != generation:
            return []
        del self._documents[document_id]
        return [Record(document_id, "idle", 0)]

    def recovered_active(self, document_ids: list[str]) -> list[Action]:
        """Documents whose latest row is 'active' when the server starts.

        Nobody is connected to them through this process yet: treat each as if its
        last human just left, so it goes 'idle' after the grace unless someone comes.
        """
        actions: list[Action] = []
        for document_id in document_ids:
            if document_id in self._documents:
                continue  # a human already joined since start-up
            entry = self._documents[document_id] = _Document()
            entry.generation = 1
            actions.append(StartGrace(document_id, entry.generation, self._grace_s))
        return actions
