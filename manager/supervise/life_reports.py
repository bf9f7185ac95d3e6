"""A life's answers: its claim's answer and its worker's reports.

:class:`LifeReports` turns what the shells report about one agent life (the
claim was made, refused or lost; the worker connected, reported activity or an
error, stopped answering pings, exited; its row was ended by someone else) into
that document's next phase, and asks the
:class:`~manager.supervise.supervisor.Supervisor` built on it to reconcile the
whole manager afterwards. A report of an earlier life of the document is
ignored.

- A claim is idempotent per life: when its answer is lost, the same agent id is
  claimed again (backoff from 1 s up to ``claim_retry_s``), and ended if the
  document stops being wanted meanwhile. A life's claim also ends
  (``supersedes``) this manager's previous row of the document, whose end may
  still sit in the writer's buffer. A stop that arrives while the claim is in
  flight ends the life as soon as the claim answers, before any process.
- Refused by another manager's live row: ``OWNED_ELSEWHERE``, tried again after
  ``claim_retry_s`` (or when the lease renewal's probe finds the owner gone).
  Refused by a row of this manager's id that no life here knows (left over by a
  run whose recovery missed it): claimed again at once, superseding that row.
- A worker that exits unasked is a crash
  (:meth:`~manager.supervise.policy.RestartPolicy.crashed`); one that exits
  after a ``Stop`` ends with the stop's reason. A row ended by someone else, or
  a worker the docserver fenced, stops the worker (``owned_elsewhere``) and
  waits ``claim_retry_s``; while draining it is the handover
  (:mod:`~manager.supervise.drain`).

Pure: no I/O, imports only the other pure modules of :mod:`manager.supervise`.
"""

from __future__ import annotations

from manager.supervise.actions import Action, EndLife, EndReason, Kill, Stop
from manager.supervise.documents import DocumentBook, DocumentState, Phase
from manager.supervise.policy import RestartPolicy

__all__ = ["LifeReports"]


class LifeReports(DocumentBook):
    """The inputs about one life; :meth:`_reconcile` is the Supervisor's."""

    #: set by the Supervisor
    policy: RestartPolicy
    manager_id: str
    evictions: int
    _shutting_down: bool
    _draining: bool

    def _reconcile(self, now: float) -> list[Action]:
        """Bring every document's life in line with what is wanted (the Supervisor's)."""
        raise NotImplementedError

    def _handed_over(self, doc: DocumentState, now: float, *, fenced: bool) -> list[Action]:
        """While draining, a successor holds the document (:mod:`~manager.supervise.drain`)."""
        raise NotImplementedError

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
            end = self.policy.crashed(doc, agent_id, detail, now)
        self._no_life(doc, end)
        return [end, *self._reconcile(now)]

    # --- transitions ---------------------------------------------------------------

    def _detach_reason(self, doc: DocumentState) -> str:
        """Why a life of ``doc`` ends now that it is not wanted (or blocked)."""
        return str(doc.blocked if doc.blocked is not None else doc.detach_reason)

    def _stop(self, doc: DocumentState, reason: str) -> Stop:
        """Stop the current life's worker gracefully, for ``reason``."""
        assert doc.agent_id is not None
        doc.phase = Phase.STOPPING
        doc.ending_reason = str(reason)
        return Stop(doc.document_id, doc.agent_id, str(reason))
