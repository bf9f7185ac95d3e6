"""Fencing tokens per document: at most one agent writes, whatever the managers believe.

Every agent life's credential carries a fencing token that only grows per
document (the manager's ``agent_connections.fence``). :class:`Fences` keeps the
highest token seen per document and decides (pure; :class:`docserver.app.DocserverApp`
carries it out):

- a connecting agent whose token is lower than the highest seen is refused
  (close code 4412, "fenced"): its manager lost the document to another one;
- an agent with a higher token is admitted, and every agent connected to that
  document with a lower token is retired (closed with 4412) right after the
  newcomer's first awareness update was relayed, or right before its first
  document update: a paused manager's worker stops writing before its successor
  writes, and people see the new agent before the old one leaves
  (make-before-break);
- an equal token is the same life reconnecting: admitted.

Credentials without a token (the master secret of ``docagents worker``, managers
from before fencing) are neither fenced nor fence others. The highest tokens of
the most recently seen documents are kept (bounded); a document forgotten here
learns its floor again from the next agent that connects.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["FENCED_CLOSE_CODE", "Fences"]

#: Close code for an agent whose fencing token is lower than another agent's.
FENCED_CLOSE_CODE = 4412
#: Documents whose highest token is remembered.
REMEMBERED = 100_000


class Fences:
    def __init__(self, *, remembered: int = REMEMBERED) -> None:
        self._highest: OrderedDict[str, int] = OrderedDict()
        self._remembered = remembered

    def highest(self, document_id: str) -> int | None:
        return self._highest.get(document_id)

    def admit(self, document_id: str, fence: int) -> bool:
        """Whether an agent with ``fence`` may connect to ``document_id`` (it then
        sets the floor; agents below it are to be retired: :meth:`retired`)."""
        highest = self._highest.get(document_id)
        if highest is not None and fence < highest:
            return False
        self._highest[document_id] = fence
        self._highest.move_to_end(document_id)
        while len(self._highest) > self._remembered:
            self._highest.popitem(last=False)
        return True

    def retired(self, document_id: str, fences: dict[object, int]) -> list[object]:
        """Of the connected agents (key -> token), those below the document's floor."""
        highest = self._highest.get(document_id)
        if highest is None:
            return []
        return [key for key, fence in fences.items() if fence < highest]
