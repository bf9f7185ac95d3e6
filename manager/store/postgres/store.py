"""The Postgres backend of :class:`~manager.store.base.Store` (psycopg 3, async).

A small :class:`psycopg_pool.AsyncConnectionPool` of autocommit connections;
each call borrows a connection for one statement (or one short transaction)
and gives it back. Connections are checked when handed out
(:func:`~manager.store.postgres.connection.check_pooled`), so a database restart
costs one failed check and a reconnect, not a failed call. psycopg errors are
translated here: connection problems into :class:`~manager.errors.StoreUnavailable`,
refusals into :class:`~manager.errors.StoreError`. Messages never carry the
connection string (it may hold a password).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Self

import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from manager.errors import SchemaMissing, StoreError, StoreUnavailable
from manager.store import rows
from manager.store.postgres import queries
from manager.store.postgres.connection import (
    brief,
    check_connectable,
    check_pooled,
    database_target,
)
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

__all__ = ["PostgresStore"]


def _supersede_json(supersedes: Mapping[str, Supersede] | None, agent_id: str) -> Jsonb | None:
    found = None if supersedes is None else supersedes.get(agent_id)
    return None if found is None else Jsonb(found.as_json())


class PostgresStore:
    """The manager's database, through a small pool of autocommit connections."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    @classmethod
    async def connect(
        cls,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        timeout_s: float = 5.0,
        open_timeout_s: float = 10.0,
    ) -> Self:
        """Open the pool; raise :class:`StoreUnavailable` if no connection can be made.

        ``timeout_s`` bounds how long one call waits for a connection while the
        database is down, so callers (the writer) fail fast and buffer.
        """
        await check_connectable(conninfo, timeout_s=open_timeout_s)
        target = database_target(conninfo)
        pool = psycopg_pool.AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            check=check_pooled,
            timeout=timeout_s,
            # Short reconnect chains: a chain's delays double, so a long one would
            # keep the pool away long after the database is back (the next call
            # starts a new chain at once).
            reconnect_timeout=1.0,
            name="docagents-store",
            open=False,
        )
        # The pool logs every failed attempt (several lines each); while opening,
        # the one summary below says it instead.
        pool_log = logging.getLogger("psycopg.pool")
        level = pool_log.level
        pool_log.setLevel(logging.ERROR)
        try:
            await pool.open(wait=True, timeout=open_timeout_s)
        except psycopg_pool.PoolTimeout as exc:
            await pool.close()
            raise StoreUnavailable(
                f"cannot connect to the database {target} within {open_timeout_s:g} s"
            ) from exc
        finally:
            pool_log.setLevel(level)
        return cls(pool)

    # ------------------------------------------------------------ plumbing

    @contextlib.asynccontextmanager
    async def _cursor(self) -> AsyncIterator[psycopg.AsyncCursor[dict[str, Any]]]:
        try:
            async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                yield cur
        except psycopg_pool.PoolClosed as exc:
            raise StoreError("the store is closed") from exc
        except psycopg_pool.PoolTimeout as exc:
            raise StoreUnavailable("no database connection available") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"database connection failed: {brief(exc)}") from exc
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction) as exc:
            raise SchemaMissing(f"the docagents schema is missing: {brief(exc)}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"database refused a statement: {brief(exc)}") from exc

    async def _fetchall(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        async with self._cursor() as cur:
            await cur.execute(query, params)
            return await cur.fetchall()

    # ------------------------------------------------------------- events

    async def latest_events(self) -> tuple[list[ActivityEvent], int]:
        """The latest usable event of every document up to the cursor, and the cursor.

        Both come from one snapshot. The cursor is the newest id, or just below
        an id missing among the newest :data:`~manager.store.rows.START_GAP_WINDOW`
        (an INSERT still in flight), so the reader delivers that row when it commits.
        """
        async with self._cursor() as cur, cur.connection.transaction():
            await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            await cur.execute(queries.NEWEST_EVENT_ID)
            top = (await cur.fetchone() or {"top": 0})["top"]
            cursor = top
            if top > 0:
                await cur.execute(
                    queries.FIRST_MISSING_ID, {"top": top, "window": rows.START_GAP_WINDOW}
                )
                first_missing = (await cur.fetchone() or {}).get("min")
                if first_missing is not None:
                    cursor = first_missing - 1
            await cur.execute(queries.LATEST_EVENTS, {"cursor": cursor})
            found = await cur.fetchall()
        events = [event for row in found if (event := rows.activity_event(row)) is not None]
        events.sort(key=lambda e: e.id)
        return events, cursor

    async def read_events(self, cursor: int, limit: int = 1000) -> EventPage:
        found = await self._fetchall(queries.READ_EVENTS, (cursor, limit))
        events = [event for row in found if (event := rows.activity_event(row)) is not None]
        return EventPage(events=events, ids=[row["id"] for row in found])

    # ------------------------------------------------------------- agents

    async def claim_document(
        self,
        document_id: str,
        agent_id: str,
        manager_id: str,
        manager_host: str | None,
        metadata: dict[str, Any] | None = None,
        supersedes: Supersede | None = None,
    ) -> ClaimResult:
        found = await self._fetchall(
            queries.CLAIM,
            (
                document_id,
                agent_id,
                manager_id,
                manager_host,
                Jsonb(metadata or {}),
                None if supersedes is None else Jsonb(supersedes.as_json()),
            ),
        )
        if not found:
            raise StoreError(f"claim_document returned nothing for {document_id!r}")
        row = found[0]
        return ClaimResult(claimed=bool(row["claimed"]), row=rows.agent_row(row))

    async def claim_documents(
        self,
        claims: Sequence[tuple[str, str]],
        manager_id: str,
        manager_host: str | None,
        metadata: dict[str, Any] | None = None,
        supersedes: Mapping[str, Supersede] | None = None,
    ) -> list[ClaimResult]:
        """One statement for all, in document order.

        The statement is one transaction: its new rows stay locked until it commits,
        so two managers claiming overlapping batches must take the documents in the
        same order, or each would wait on the other's (a deadlock Postgres breaks by
        failing one of them).
        """
        if not claims:
            return []
        order = sorted(range(len(claims)), key=lambda i: claims[i][0])
        found = await self._fetchall(
            queries.CLAIMS,
            (
                [claims[i][0] for i in order],
                [claims[i][1] for i in order],
                [_supersede_json(supersedes, claims[i][1]) for i in order],
                manager_id,
                manager_host,
                Jsonb(metadata or {}),
            ),
        )
        if len(found) != len(claims):
            raise StoreError(f"claim_document answered {len(found)} of {len(claims)} claims")
        results: list[ClaimResult | None] = [None] * len(claims)
        for row in found:
            position = order[int(row.pop("n")) - 1]
            results[position] = ClaimResult(
                claimed=bool(row.pop("claimed")), row=rows.agent_row(row)
            )
        return [result for result in results if result is not None]

    async def set_agent_status(
        self,
        agent_id: str,
        status: str,
        pid: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AgentRow | None:
        found = await self._fetchall(
            queries.SET_STATUS,
            (agent_id, status, pid, None if metadata is None else Jsonb(metadata)),
        )
        return rows.agent_row(found[0]) if found else None

    async def set_agent_statuses(self, changes: Sequence[StatusChange]) -> int:
        """One statement (one transaction) for all: a burst's status changes at once."""
        if not changes:
            return 0
        found = await self._fetchall(
            queries.SET_STATUSES,
            (
                [c.agent_id for c in changes],
                [c.status for c in changes],
                [c.pid for c in changes],
                [None if c.metadata is None else Jsonb(c.metadata) for c in changes],
            ),
        )
        return int(found[0]["changed"])

    async def end_agent_life(
        self, agent_id: str, status: str, reason: str | None
    ) -> AgentRow | None:
        rows.require_final_status(status)
        found = await self._fetchall(queries.END_LIFE, (agent_id, status, reason))
        return rows.agent_row(found[0]) if found else None

    async def end_agent_lives(
        self, agent_ids: Sequence[str], status: str, reason: str | None
    ) -> list[AgentRow]:
        """One statement for all (crash recovery ends a whole fleet's rows at once)."""
        rows.require_final_status(status)
        if not agent_ids:
            return []
        found = await self._fetchall(queries.END_LIVES, (list(agent_ids), status, reason))
        return [rows.agent_row(row) for row in found]

    async def record_metrics(
        self, batch: Sequence[MetricsRecord], batch_id: BatchId | None = None
    ) -> int | None:
        if not batch:
            return 0
        records = Jsonb([record.as_json() for record in batch])
        if batch_id is None:
            found = await self._fetchall(queries.RECORD_METRICS, (records,))
        else:
            found = await self._fetchall(
                queries.RECORD_METRICS_ONCE, (batch_id.writer_id, batch_id.seq, records)
            )
        inserted = found[0]["inserted"]
        return None if inserted is None else int(inserted)

    async def live_agents_of_manager(self, manager_id: str) -> list[AgentRow]:
        found = await self._fetchall(queries.MANAGER_AGENTS, (manager_id,))
        return [rows.agent_row(row) for row in found]

    async def end_agent_lives_at(
        self, ends: Sequence[tuple[str, str, str | None, datetime]]
    ) -> list[AgentRow]:
        """One statement for all: a writer's buffered ends, each with its real time."""
        if not ends:
            return []
        for _agent, status, _reason, _at in ends:
            rows.require_final_status(status)
        found = await self._fetchall(
            queries.END_LIVES_AT,
            (
                [e[0] for e in ends],
                [e[1] for e in ends],
                [e[2] for e in ends],
                [e[3] for e in ends],
            ),
        )
        return [rows.agent_row(row) for row in found]

    # ------------------------------------------------------------- the fleet

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
        found = await self._fetchall(
            queries.ACQUIRE_LEASE,
            (manager_id, instance_id, host, pid, ttl_s, capacity, agents, state, replaces),
        )
        if not found:
            raise StoreError("acquire_manager_lease returned nothing")
        row = found[0]
        acquired, took_over = bool(row.pop("acquired")), bool(row.pop("took_over"))
        return LeaseAnswer(acquired=acquired, took_over=took_over, lease=rows.manager_lease(row))

    async def release_lease(self, manager_id: str, instance_id: uuid.UUID) -> bool:
        found = await self._fetchall(queries.RELEASE_LEASE, (manager_id, instance_id))
        return bool(found and found[0]["released"])

    async def drain_manager(self, manager_id: str) -> bool:
        found = await self._fetchall(queries.DRAIN_MANAGER, (manager_id,))
        return bool(found and found[0]["drained"])

    async def list_leases(self) -> list[ManagerLease]:
        return [rows.manager_lease(row) for row in await self._fetchall(queries.LIST_LEASES)]

    async def sweep_expired_leases(self) -> list[AgentRow]:
        return [rows.agent_row(row) for row in await self._fetchall(queries.SWEEP_LEASES)]

    async def claimable_documents(self, document_ids: Sequence[str]) -> list[str]:
        if not document_ids:
            return []
        found = await self._fetchall(queries.CLAIMABLE, (list(document_ids),))
        return [row["document_id"] for row in found]

    async def system_stats(self) -> SystemStats:
        found = await self._fetchall(queries.SYSTEM_STATS)
        return rows.system_stats(found[0])

    async def prune_history(self, older_than: timedelta, batch: int) -> tuple[int, int]:
        found = await self._fetchall(queries.PRUNE_HISTORY, (older_than, batch))
        return int(found[0]["metrics_deleted"]), int(found[0]["activity_deleted"])

    async def load_extraction_memory(self, document_id: str, limit: int) -> list[dict[str, Any]]:
        found = await self._fetchall(queries.LOAD_MEMORY, (document_id, limit))
        return [rows.memory_entry(row) for row in found]

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
        found = await self._fetchall(
            queries.RECORD_EXTRACTIONS,
            (document_id, Jsonb(list(entries)), Jsonb(list(seen)), Jsonb(usage), cap, retention),
        )
        return int(found[0]["stored"] or 0)

    async def prune_extraction_memory(self, older_than: timedelta, batch: int) -> int:
        found = await self._fetchall(queries.PRUNE_MEMORY, (older_than, batch))
        return int(found[0]["deleted"] or 0)

    async def extraction_stats(self) -> ExtractionStats:
        found = await self._fetchall(queries.EXTRACTION_STATS)
        return rows.extraction_stats(found[0])

    async def aclose(self) -> None:
        await self._pool.close()
