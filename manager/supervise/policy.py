"""The supervisor's rules of thumb: restarts after a crash, placement, eviction.

- Restarts (:class:`RestartPolicy`): a worker that exits unasked is restarted
  after a backoff (``backoff_min_s`` doubling to ``backoff_max_s``, reset after
  ``stable_s`` of uptime); more than ``crash_loop_restarts`` exits within
  ``crash_loop_window_s`` end the life with status ``error`` and block the
  document until its next visit. A claim whose answer was lost is retried with
  the same agent id, 1 s doubling up to ``claim_retry_s``.
- Placement (:func:`placement_pick`): weighted rendezvous hashing over the live
  managers with free slots, so every manager agrees which of them should claim a
  newly wanted document, and the load spreads by free slots.
- Eviction (:func:`allot_slots`): free slots go to the most recent waiting
  documents; a waiting document evicts the least recent worker only if that
  worker is less recent than it (and old enough: the caller passes only workers
  past their minimum residency), and never for a document owned elsewhere.

Pure: no I/O, imports only :mod:`manager.supervise.actions` and
:mod:`manager.supervise.documents`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from manager.supervise.actions import EndLife, EndReason
from manager.supervise.documents import DocumentState, Phase

__all__ = ["RestartPolicy", "allot_slots", "placement_pick"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoffs and the crash-loop limit (settings ``RESTART_*``, ``CRASH_LOOP_*``,
    ``CLAIM_RETRY_S``)."""

    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    stable_s: float = 60.0
    crash_loop_restarts: int = 5
    crash_loop_window_s: float = 300.0
    claim_retry_s: float = 15.0

    def backoff(self, consecutive_crashes: int) -> float:
        """Wait before the restart after this many crashes in a row: min doubling to max."""
        exponent = max(consecutive_crashes - 1, 0)
        return min(self.backoff_max_s, self.backoff_min_s * (2 ** min(exponent, 32)))

    def claim_backoff(self, consecutive_failures: int) -> float:
        """After a claim whose answer was lost: 1 s doubling, at most ``claim_retry_s``."""
        exponent = max(consecutive_failures - 1, 0)
        return min(self.claim_retry_s, 2.0 ** min(exponent, 32))

    def crashed(self, doc: DocumentState, agent_id: str, detail: str, now: float) -> EndLife:
        """The life ``agent_id`` of ``doc`` exited unasked: how it ends, and whether
        (and when) the document gets a new life.

        Records the crash in ``doc``: a wanted document is restarted after a
        backoff, or blocked (``crash_loop``, status ``error``) once it crashed too
        often within the window; a document nobody wants any more just ends.
        """
        if doc.connected_at is not None and now - doc.connected_at >= self.stable_s:
            doc.consecutive_crashes = 0
        doc.crash_times.append(now)
        while doc.crash_times and doc.crash_times[0] < now - self.crash_loop_window_s:
            doc.crash_times.popleft()
        crashed = f"{EndReason.CRASHED}: {detail}"
        if not doc.effectively_wanted:
            return EndLife(doc.document_id, agent_id, "disconnected", crashed)
        if len(doc.crash_times) > self.crash_loop_restarts:
            doc.blocked = EndReason.CRASH_LOOP
            return EndLife(
                doc.document_id,
                agent_id,
                "error",
                f"{EndReason.CRASH_LOOP}: {len(doc.crash_times)} exits within "
                f"{self.crash_loop_window_s:g} s, not restarting until the next "
                f"visit; last: {detail}",
            )
        doc.consecutive_crashes += 1
        doc.crashed_last = True
        doc.not_before = now + self.backoff(doc.consecutive_crashes)
        return EndLife(doc.document_id, agent_id, "disconnected", crashed)


def placement_pick(document_id: str, members: Iterable[tuple[str, int]]) -> str | None:
    """The manager that weighted rendezvous hashing picks for ``document_id`` among
    ``members`` (manager id, free slots), weighted by free slots; None if no member
    has a free slot.

    Every manager computes the same pick from the same leases, so one of them
    claims at once and the others wait; a member's chance is proportional to its
    free slots, and a member joining or leaving moves only its own share.
    """
    best: tuple[float, str] | None = None
    for manager, free in members:
        if free <= 0:
            continue
        digest = hashlib.blake2b(f"{document_id}\0{manager}".encode(), digest_size=8)
        unit = (int.from_bytes(digest.digest(), "big") + 1) / (2**64 + 1)
        score = -math.log(unit) / free
        if best is None or (score, manager) < best:
            best = (score, manager)
    return None if best is None else best[1]


def allot_slots(
    candidates: Sequence[DocumentState],
    evictable: Sequence[DocumentState],
    *,
    free: int,
    terminating: int,
) -> list[tuple[DocumentState, DocumentState | None]]:
    """Which waiting documents to claim now, each with the worker its claim evicts.

    ``candidates``: wanted documents without a life whose backoff is over (those
    another manager holds come last);
    ``evictable``: running workers past their minimum residency and not already
    being evicted; ``free``: unused slots; ``terminating``: workers already on
    their way out, whose slots go to the most recent candidates without an
    eviction. The victim is stopped only once the claim succeeds, so a document
    this manager cannot get never costs a running agent.
    """
    plan: list[tuple[DocumentState, DocumentState | None]] = []
    victims = iter(sorted(evictable, key=lambda d: d.recency))
    # A document another manager holds has an agent already: it is retried only
    # with slots no document without an agent wants, whatever their recency (else
    # two such retries can take turns on the one free slot forever).
    order = sorted(
        candidates,
        key=lambda d: (d.phase is not Phase.OWNED_ELSEWHERE, d.recency),
        reverse=True,
    )
    for doc in order:
        if free > 0:
            plan.append((doc, None))
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
        plan.append((doc, victim))
    return plan
