"""Draining a manager, make-before-break: its documents move to other managers
while its agents keep working.

:meth:`DrainRules.drain` (SIGUSR2, ``docagents drain``, or SIGTERM beside other
managers with room: :meth:`DrainRules.hands_over_at_shutdown`) makes the
supervisor claim and start nothing from then on, but the agents keep running
while the other managers take their documents over (``claim_document()`` ends a
draining manager's row ``drained`` and inserts the successor's with a higher
fencing token). A worker stops when the docserver fences it (its successor
showed itself), or ``handoff_grace_s`` after its row was found ended elsewhere
(a server without fencing). When no other live manager has a free slot, or
``drain_timeout_s`` after the drain began, what is left detaches (``drained``),
as a lone manager's drain does at once.

Pure: no I/O, imports only the other pure modules of :mod:`manager.supervise`.
"""

from __future__ import annotations

from manager.supervise.actions import Action, EndLife, EndReason
from manager.supervise.documents import NO_LIFE, DocumentState, Phase
from manager.supervise.life_reports import LifeReports

__all__ = ["DrainRules"]


class DrainRules(LifeReports):
    """The drain's inputs and its reconcile; the rest is the Supervisor's."""

    #: set by the Supervisor
    drain_timeout_s: float
    handoff_grace_s: float
    _holds_lease: bool
    #: other live managers and their free slots (from their leases)
    _peers: dict[str, int]
    #: when a make-before-break drain gives up and detaches what is left
    _drain_deadline: float | None

    @property
    def draining(self) -> bool:
        return self._draining

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
            elif doc.phase in NO_LIFE and doc.unanswered_claim is not None:
                actions.append(self._end_unanswered(doc, EndReason.DRAINED))
        return actions + self._reconcile(now)

    def hands_over_at_shutdown(self) -> bool:
        """Whether a stop (SIGTERM) should drain first: this manager holds its lease,
        runs workers, and another live manager has a free slot for them."""
        return self._holds_lease and self.workers > 0 and self._peers_have_room()

    # --- internals -----------------------------------------------------------------

    def _peers_have_room(self) -> bool:
        return any(free > 0 for free in self._peers.values())

    def _handed_over(self, doc: DocumentState, now: float, *, fenced: bool) -> list[Action]:
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
            if doc.phase in NO_LIFE:
                if doc.unanswered_claim is not None:
                    actions.append(self._end_unanswered(doc, EndReason.DRAINED))
                self._forget_if_unused(doc)
        return actions
