"""Who may speak for an awareness client id in one room (pure).

y-websocket clients re-send every awareness change they receive, including the
states of other clients, and y-protocols clients time out states they have not
heard about for 30 s and broadcast that removal too. A server that believed
every message would let any connection delete or re-own anybody's awareness
state: a person closing one tab would take the agent's caret and name with them,
and any client could post a fake "AI Agent" or remove the real one.

:class:`AwarenessOwners` decides, entry by entry, which awareness changes a
connection may make. The rule (DESIGN.md, "Who is a person"): an awareness
client id belongs to the connection that introduced it.

- A state that says it is an agent's (``"type": "agent"``) is accepted only from an
  agent connection: nobody else can post a fake "AI Agent".
- An id nobody holds is taken by the first connection that sets a state for it.
- The owner may change or remove its own ids at any time.
- Another connection's entry for an owned id is dropped: a re-sent copy, a
  timed-out removal, or a forgery alike. One exception keeps a person's caret
  when their network blips: a *human* connection may take over an id owned by
  another human connection with a state whose clock is higher than any the room
  has seen for it (only the client itself can produce a newer clock; re-sent
  copies carry the clock the room already relayed). An agent's ids are never
  taken over.
- When the owner's connection ends, its ids are released and remembered with
  their last clock for a while, so a late re-sent copy of a state that was
  just removed cannot bring it back.

It does no I/O; :class:`docserver.connection.Connection` filters messages with
it and :class:`docserver.rooms.DocumentRoom` removes released states.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = ["AwarenessOwners", "EntryLike"]

#: Removed ids remembered per room (oldest forgotten first).
TOMBSTONES = 4096


class EntryLike(Protocol):
    """What the owners read of one awareness entry (``messages.AwarenessEntry`` fits)."""

    @property
    def client_id(self) -> int: ...
    @property
    def clock(self) -> int: ...
    @property
    def present(self) -> bool: ...
    @property
    def claims_agent(self) -> bool: ...


E = TypeVar("E", bound=EntryLike)


@dataclass(slots=True)
class _Owned:
    owner: Hashable
    agent: bool
    clock: int


class AwarenessOwners:
    def __init__(self) -> None:
        self._owned: dict[int, _Owned] = {}
        self._by_owner: dict[Hashable, set[int]] = {}
        self._released: OrderedDict[int, int] = OrderedDict()

    def owner_of(self, client_id: int) -> Hashable | None:
        entry = self._owned.get(client_id)
        return None if entry is None else entry.owner

    def ids_of(self, owner: Hashable) -> set[int]:
        return set(self._by_owner.get(owner, ()))

    def accept(self, owner: Hashable, entries: Iterable[E], *, agent: bool) -> list[E]:
        """The entries ``owner`` may apply; ownership is updated for those."""
        accepted = []
        for entry in entries:
            if self._may_apply(owner, entry, agent=agent):
                accepted.append(entry)
        return accepted

    def release(self, owner: Hashable) -> set[int]:
        """``owner``'s connection ended: the ids whose states the room must remove."""
        ids = self._by_owner.pop(owner, set())
        for client_id in ids:
            entry = self._owned.pop(client_id)
            self._remember_released(client_id, entry.clock)
        return ids

    def _may_apply(self, owner: Hashable, entry: EntryLike, *, agent: bool) -> bool:
        if entry.claims_agent and not agent:
            return False
        client_id = entry.client_id
        held = self._owned.get(client_id)
        if held is None:
            released_clock = self._released.get(client_id)
            if released_clock is not None and entry.clock <= released_clock:
                return False  # a late copy of a state that is gone
            if not entry.present:
                return False  # nothing to remove; nobody to relay it to
            self._released.pop(client_id, None)
            self._take(owner, client_id, entry.clock, agent=agent)
            return True
        if held.owner == owner:
            if entry.present:
                held.clock = max(held.clock, entry.clock)
            else:
                self._owned.pop(client_id)
                self._by_owner[owner].discard(client_id)
                self._remember_released(client_id, entry.clock)
            return True
        if held.agent or agent or not entry.present or entry.clock <= held.clock:
            return False
        # A person's client came back on a new connection with a newer state.
        self._by_owner[held.owner].discard(client_id)
        del self._owned[client_id]
        self._take(owner, client_id, entry.clock, agent=agent)
        return True

    def _take(self, owner: Hashable, client_id: int, clock: int, *, agent: bool) -> None:
        self._owned[client_id] = _Owned(owner, agent, clock)
        self._by_owner.setdefault(owner, set()).add(client_id)

    def _remember_released(self, client_id: int, clock: int) -> None:
        self._released[client_id] = clock
        self._released.move_to_end(client_id)
        while len(self._released) > TOMBSTONES:
            self._released.popitem(last=False)
