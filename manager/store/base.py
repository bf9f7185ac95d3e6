"""The seam between the manager and its database: the :class:`Store` protocol.

The supervisor, the writer, the fleet keeper and the ops commands talk to a
``Store``; :mod:`manager.store.postgres` and :mod:`manager.store.supabase` implement
it. The records it speaks are defined in :mod:`manager.store.records` and
exported here too, so a caller imports the seam from one place.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from manager.store.records import (
    EVENT_TYPES,
    FINAL_STATUSES,
    ActivityEvent,
    AgentRow,
    BatchId,
    ClaimResult,
    EventPage,
    ExtractionStats,
    LeaseAnswer,
    ManagerLease,
    MetricsRecord,
    StatusChange,
    Supersede,
    SystemStats,
)

__all__ = [
    "EVENT_TYPES",
    "FINAL_STATUSES",
    "ActivityEvent",
    "AgentRow",
    "BatchId",
    "ClaimResult",
    "EventPage",
    "ExtractionStats",
    "LeaseAnswer",
    "ManagerLease",
    "MetricsRecord",
    "StatusChange",
    "Store",
    "Supersede",
    "SystemStats",
]


class Store(Protocol):
    """What the manager needs from a database backend.

    Every method raises :class:`~manager.errors.StoreUnavailable` when the
    database cannot be reached and :class:`~manager.errors.StoreError` when it
    refuses a statement.
    """

    async def latest_events(self) -> tuple[list[ActivityEvent], int]:
        """The latest event of every document, and the id cursor to follow from."""
        ...

    async def read_events(self, cursor: int, limit: int = 1000) -> EventPage:
        """Events with ``id > cursor`` in id order, at most ``limit`` rows read."""
        ...

    async def claim_document(
        self,
        document_id: str,
        agent_id: str,
        manager_id: str,
        manager_host: str | None,
        metadata: dict[str, Any] | None = None,
        supersedes: Supersede | None = None,
    ) -> ClaimResult:
        """Claim for a new life; the same ``agent_id`` claimed again is answered with
        its own row (claimed while it is live)."""
        ...

    async def claim_documents(
        self,
        claims: Sequence[tuple[str, str]],
        manager_id: str,
        manager_host: str | None,
        metadata: dict[str, Any] | None = None,
        supersedes: Mapping[str, Supersede] | None = None,
    ) -> list[ClaimResult]:
        """``claim_document`` for each ``(document_id, agent_id)``, results in the same
        order, in as few round trips as the backend allows. Where it is one
        transaction, one refused claim refuses them all. ``supersedes`` is keyed
        by the claiming agent id."""
        ...

    async def set_agent_status(
        self,
        agent_id: str,
        status: str,
        pid: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AgentRow | None: ...

    async def set_agent_statuses(self, changes: Sequence[StatusChange]) -> int:
        """``set_agent_status`` for each change, in order, as one transaction where the
        backend allows (then a refusal refuses them all); the number of rows changed."""
        ...

    async def end_agent_life(
        self, agent_id: str, status: str, reason: str | None
    ) -> AgentRow | None: ...

    async def end_agent_lives(
        self, agent_ids: Sequence[str], status: str, reason: str | None
    ) -> list[AgentRow]:
        """``end_agent_life`` for each id, in as few round trips as the backend allows;
        the rows it ended (lives already ended are left out)."""
        ...

    async def record_metrics(
        self, batch: Sequence[MetricsRecord], batch_id: BatchId | None = None
    ) -> int | None:
        """Record a batch (``record_agent_metrics``); the samples inserted.

        With ``batch_id`` (``record_agent_metrics_once``): None when that batch was
        recorded before, so sending a batch again after a lost answer counts it once.
        """
        ...

    async def live_agents_of_manager(self, manager_id: str) -> list[AgentRow]: ...

    async def end_agent_lives_at(
        self, ends: Sequence[tuple[str, str, str | None, datetime]]
    ) -> list[AgentRow]:
        """End lives ``(agent_id, status, reason, ended_at)`` with their real end time
        (``end_agent_life_at``); the rows it ended."""
        ...

    # --- the fleet (migrations/0010_manager_leases.sql) ----------------------------

    async def acquire_lease(
        self,
        manager_id: str,
        instance_id: uuid.UUID,
        *,
        host: str | None,
        pid: int | None,
        ttl_s: float,
        capacity: int = 0,
        agents: int = 0,
        state: str = "leading",
        replaces: uuid.UUID | None = None,
    ) -> LeaseAnswer:
        """Take, renew or (``replaces``: a holder proven dead) take over the lease."""
        ...

    async def release_lease(self, manager_id: str, instance_id: uuid.UUID) -> bool: ...

    async def drain_manager(self, manager_id: str) -> bool:
        """Ask a live manager to drain (its lease becomes 'draining'); False if none."""
        ...

    async def list_leases(self) -> list[ManagerLease]: ...

    async def sweep_expired_leases(self) -> list[AgentRow]:
        """End every live row of an expired lease (reason ``manager_lease_expired``)."""
        ...

    async def claimable_documents(self, document_ids: Sequence[str]) -> list[str]:
        """Of ``document_ids``, those with no live owner (or a dead one's) now."""
        ...

    async def system_stats(self) -> SystemStats: ...

    async def prune_history(self, older_than: timedelta, batch: int) -> tuple[int, int]:
        """Delete at most ``batch`` old agent_metrics and document_activity rows each
        (never a document's latest event); return (metrics, activity) deleted."""
        ...

    async def load_extraction_memory(self, document_id: str, limit: int) -> list[dict[str, Any]]:
        """A document's extraction memory (``load_extraction_memory``), most recently
        seen first: dicts with ``key``, ``extractor``, ``status``, ``places``,
        ``attempts``, ``error``."""
        ...

    async def record_extractions(
        self,
        document_id: str,
        entries: Sequence[dict[str, Any]],
        seen: Sequence[str],
        usage: dict[str, int],
        *,
        cap: int,
        retention: timedelta,
    ) -> int:
        """One worker report (``record_extractions``); the entries stored."""
        ...

    async def prune_extraction_memory(self, older_than: timedelta, batch: int) -> int:
        """Delete at most ``batch`` memory rows not seen for ``older_than``."""
        ...

    async def extraction_stats(self) -> ExtractionStats: ...

    async def aclose(self) -> None: ...
