"""The Supabase backend of :class:`~manager.store.base.Store`: PostgREST through ``supabase``.

Every atomic state change calls the same SQL function as the Postgres backend,
through ``.rpc()`` on a :class:`~manager.store.supabase.rest.PostgrestSession`
(which translates every error). PostgREST runs one function per request, so a
batch the Postgres backend sends as one statement is a few requests side by
side here, except metrics: a batch of them is one ``record_agent_metrics_once``
call. Events are read by id cursor with a plain select
(``id=gt.N&order=id.asc&limit=N``); the reader
(:class:`~manager.events.cursor.EventCursor`) keeps the holes of uncommitted
INSERTs open for a while, so a page reports every id it read.
"""

from __future__ import annotations

import functools
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Self

from pydantic import SecretStr

from manager.errors import StoreError
from manager.store import rows
from manager.store.records import (
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
from manager.store.supabase.rest import PostgrestSession, side_by_side

__all__ = ["SupabaseStore"]

_TABLE = "document_activity"
_PAGE = 1000


class SupabaseStore:
    """Talks to a Supabase project's PostgREST with the service_role key."""

    def __init__(self, url: str, service_key: SecretStr, *, timeout_s: float = 10.0) -> None:
        self._rest = PostgrestSession(url, service_key, timeout_s=timeout_s)
        self.url = self._rest.url

    @classmethod
    async def connect(cls, url: str, service_key: SecretStr, **kwargs: Any) -> Self:
        """A store whose key has been checked with one cheap call."""
        store = cls(url, service_key, **kwargs)
        try:
            await store.system_stats()
        except BaseException:
            await store.aclose()
            raise
        return store

    # -- reading events ----------------------------------------------------------

    async def latest_events(self) -> tuple[list[ActivityEvent], int]:
        """The latest usable event of every document up to the cursor, and the cursor.

        PostgREST has no ``DISTINCT ON``: this is a keyset scan of the table
        (bounded by retention; it runs once at start). As in the Postgres
        store, the cursor is the newest id, or just below an id missing among
        the newest :data:`~manager.store.rows.START_GAP_WINDOW` (an INSERT still in
        flight), so the reader delivers that row when it commits.
        """
        latest: dict[str, ActivityEvent] = {}
        recent: deque[dict[str, Any]] = deque()
        top = 0
        while True:
            page = await self._rest.select_after(_TABLE, top, _PAGE)
            for row in page:
                recent.append(row)
                top = int(row["id"])
                while recent and int(recent[0]["id"]) <= top - rows.START_GAP_WINDOW:
                    self._fold(latest, recent.popleft())
            if len(page) < _PAGE:
                break
        present = {int(row["id"]) for row in recent}
        missing = [
            i for i in range(max(top - rows.START_GAP_WINDOW + 1, 1), top + 1) if i not in present
        ]
        cursor = missing[0] - 1 if missing else top
        for row in recent:
            if int(row["id"]) <= cursor:
                self._fold(latest, row)
        return sorted(latest.values(), key=lambda e: e.id), cursor

    @staticmethod
    def _fold(latest: dict[str, ActivityEvent], row: dict[str, Any]) -> None:
        event = rows.activity_event(row)
        if event is not None:
            latest[event.document_id] = event

    async def read_events(self, cursor: int, limit: int = 1000) -> EventPage:
        page = await self._rest.select_after(_TABLE, cursor, limit)
        events = [event for row in page if (event := rows.activity_event(row)) is not None]
        return EventPage(events=events, ids=[int(row["id"]) for row in page])

    # -- agent lives ------------------------------------------------------------------

    async def claim_document(
        self,
        document_id: str,
        agent_id: str,
        manager_id: str,
        manager_host: str | None,
        metadata: dict[str, Any] | None = None,
        supersedes: Supersede | None = None,
    ) -> ClaimResult:
        params = {
            "p_document_id": document_id,
            "p_agent_id": agent_id,
            "p_manager_id": manager_id,
            "p_manager_host": manager_host,
            "p_metadata": metadata or {},
            "p_supersedes": None if supersedes is None else supersedes.as_json(),
        }
        data = await self._rest.rpc("claim_document", params)
        if not isinstance(data, list) or len(data) != 1:
            raise StoreError(f"claim_document returned {len(data or [])} rows, expected 1")
        return ClaimResult(
            claimed=bool(data[0]["claimed"]), row=rows.agent_row(data[0]["connection"])
        )

    async def claim_documents(
        self,
        claims: Sequence[tuple[str, str]],
        manager_id: str,
        manager_host: str | None,
        metadata: dict[str, Any] | None = None,
        supersedes: Mapping[str, Supersede] | None = None,
    ) -> list[ClaimResult]:
        """``claim_document`` calls side by side (PostgREST runs one function per request)."""
        found = supersedes or {}
        return await side_by_side(
            [
                functools.partial(
                    self.claim_document, d, a, manager_id, manager_host, metadata, found.get(a)
                )
                for d, a in claims
            ]
        )

    async def set_agent_status(
        self,
        agent_id: str,
        status: str,
        pid: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AgentRow | None:
        params: dict[str, Any] = {"p_agent_id": agent_id, "p_status": status, "p_pid": pid}
        if metadata is not None:
            params["p_metadata"] = metadata
        return _first_row(await self._rest.rpc("set_agent_status", params))

    async def set_agent_statuses(self, changes: Sequence[StatusChange]) -> int:
        """One RPC per change, in order (PostgREST runs one function per request)."""
        changed = 0
        for c in changes:
            if await self.set_agent_status(c.agent_id, c.status, c.pid, c.metadata) is not None:
                changed += 1
        return changed

    async def end_agent_life(
        self, agent_id: str, status: str, reason: str | None
    ) -> AgentRow | None:
        params = {"p_agent_id": agent_id, "p_status": status, "p_reason": reason}
        return _first_row(await self._rest.rpc("end_agent_life", params))

    async def end_agent_lives(
        self, agent_ids: Sequence[str], status: str, reason: str | None
    ) -> list[AgentRow]:
        """``end_agent_life`` calls side by side (PostgREST runs one function per request)."""
        rows.require_final_status(status)
        ended = await side_by_side(
            [functools.partial(self.end_agent_life, a, status, reason) for a in agent_ids]
        )
        return [row for row in ended if row is not None]

    async def record_metrics(
        self, batch: Sequence[MetricsRecord], batch_id: BatchId | None = None
    ) -> int | None:
        if not batch:
            return 0
        records = [r.as_json() for r in batch]
        if batch_id is None:
            data = await self._rest.rpc("record_agent_metrics", {"p_batch": records})
            return int(data or 0)
        data = await self._rest.rpc(
            "record_agent_metrics_once",
            {
                "p_writer_id": str(batch_id.writer_id),
                "p_batch_seq": batch_id.seq,
                "p_batch": records,
            },
        )
        return None if data is None else int(data)

    async def live_agents_of_manager(self, manager_id: str) -> list[AgentRow]:
        data = await self._rest.rpc("get_manager_active_agents", {"manager_id_param": manager_id})
        return [rows.agent_row(row) for row in data or []]

    async def end_agent_lives_at(
        self, ends: Sequence[tuple[str, str, str | None, datetime]]
    ) -> list[AgentRow]:
        """``end_agent_life_at`` calls side by side (one function per request)."""
        for _agent, status, _reason, _at in ends:
            rows.require_final_status(status)

        async def one(agent: str, status: str, reason: str | None, at: datetime) -> Any:
            params = {
                "p_agent_id": agent,
                "p_status": status,
                "p_reason": reason,
                "p_ended_at": at.isoformat(),
            }
            return _first_row(await self._rest.rpc("end_agent_life_at", params))

        ended = await side_by_side([functools.partial(one, *end) for end in ends])
        return [row for row in ended if row is not None]

    # -- the fleet ----------------------------------------------------------------------

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
        params = {
            "p_manager_id": manager_id,
            "p_instance_id": str(instance_id),
            "p_host": host,
            "p_pid": pid,
            "p_ttl_s": ttl_s,
            "p_capacity": capacity,
            "p_agents": agents,
            "p_state": state,
            "p_replaces": None if replaces is None else str(replaces),
        }
        data = await self._rest.rpc("acquire_manager_lease", params)
        if not isinstance(data, list) or len(data) != 1:
            raise StoreError("acquire_manager_lease returned no row")
        row = data[0]
        return LeaseAnswer(
            acquired=bool(row["acquired"]),
            took_over=bool(row["took_over"]),
            lease=rows.manager_lease(row["lease"]),
        )

    async def release_lease(self, manager_id: str, instance_id: uuid.UUID) -> bool:
        params = {"p_manager_id": manager_id, "p_instance_id": str(instance_id)}
        return bool(await self._rest.rpc("release_manager_lease", params))

    async def drain_manager(self, manager_id: str) -> bool:
        return bool(await self._rest.rpc("drain_manager", {"p_manager_id": manager_id}))

    async def list_leases(self) -> list[ManagerLease]:
        data = await self._rest.rpc("list_manager_leases", {})
        return [rows.manager_lease(row) for row in data or []]

    async def sweep_expired_leases(self) -> list[AgentRow]:
        data = await self._rest.rpc("sweep_expired_leases", {})
        return [rows.agent_row(row) for row in data or []]

    async def claimable_documents(self, document_ids: Sequence[str]) -> list[str]:
        if not document_ids:
            return []
        data = await self._rest.rpc("claimable_documents", {"p_document_ids": list(document_ids)})
        return [str(item) for item in data or []]

    async def system_stats(self) -> SystemStats:
        data = await self._rest.rpc("get_agent_system_stats", {})
        if not isinstance(data, list) or not data:
            raise StoreError("get_agent_system_stats returned no row")
        return rows.system_stats(data[0])

    async def prune_history(self, older_than: timedelta, batch: int) -> tuple[int, int]:
        params = {"p_older_than": f"{older_than.total_seconds()} seconds", "p_batch": batch}
        data = await self._rest.rpc("prune_history", params)
        if not isinstance(data, list) or not data:
            raise StoreError("prune_history returned no row")
        return int(data[0]["metrics_deleted"]), int(data[0]["activity_deleted"])

    async def load_extraction_memory(self, document_id: str, limit: int) -> list[dict[str, Any]]:
        data = await self._rest.rpc(
            "load_extraction_memory", {"p_document_id": document_id, "p_limit": limit}
        )
        found = data if isinstance(data, list) else []
        return [rows.memory_entry(row) for row in found if isinstance(row, dict)]

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
        data = await self._rest.rpc(
            "record_extractions",
            {
                "p_document_id": document_id,
                "p_entries": list(entries),
                "p_seen": list(seen),
                "p_usage": usage,
                "p_cap": cap,
                "p_retention": f"{retention.total_seconds()} seconds",
            },
        )
        return int(data or 0)

    async def prune_extraction_memory(self, older_than: timedelta, batch: int) -> int:
        params = {"p_older_than": f"{older_than.total_seconds()} seconds", "p_batch": batch}
        return int(await self._rest.rpc("prune_extraction_memory", params) or 0)

    async def extraction_stats(self) -> ExtractionStats:
        data = await self._rest.rpc("get_extraction_stats", {})
        if not isinstance(data, list) or not data:
            raise StoreError("get_extraction_stats returned no row")
        return rows.extraction_stats(data[0])

    async def aclose(self) -> None:
        await self._rest.aclose()


def _first_row(data: Any) -> AgentRow | None:
    return rows.agent_row(data[0]) if isinstance(data, list) and data else None
