"""The Postgres backend of :class:`~manager.store.base.Store` (psycopg 3, async).

A small :class:`psycopg_pool.AsyncConnectionPool` of autocommit connections;
each call borrows a connection for one statement (or one short transaction)
and gives it back. Connections are checked when handed out, so a database
restart costs one failed check and a reconnect, not a failed call. The check
is a round trip only when the idle connection's socket has something to read
(the server's goodbye, a reset); a quiet socket is handed out as it is, which
halves the round trips of a burst of starts. psycopg
errors are translated here: connection problems into
:class:`~manager.errors.StoreUnavailable`, refusals into
:class:`~manager.errors.StoreError`. Messages never carry the connection
string (it may hold a password).
"""

from __future__ import annotations

import contextlib
import logging
import select
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Self

import psycopg
import psycopg_pool
import structlog
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from manager.errors import ConfigurationError, StoreError, StoreUnavailable
from manager.store.base import (
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

__all__ = ["PostgresStore", "check_connectable", "libpq_environment", "refused_by_configuration"]

log = structlog.get_logger(__name__)

#: Missing ids this far below the newest one are treated as possibly in flight at start.
START_GAP_WINDOW = 1000
_MAX_DOCUMENT_ID = 512

# Named queries. Column lists are spelled out (no string building).
_LATEST_EVENTS = """
SELECT DISTINCT ON (document_id) id, document_id, event_type, user_count, "timestamp",
       metadata->>'reason' AS reason
  FROM document_activity
 WHERE id <= %(cursor)s
 ORDER BY document_id, id DESC
"""
_READ_EVENTS = """
SELECT id, document_id, event_type, user_count, "timestamp", metadata->>'reason' AS reason
  FROM document_activity
 WHERE id > %s
 ORDER BY id
 LIMIT %s
"""
_CLAIM = "SELECT c.claimed, (c.connection).* FROM claim_document(%s, %s, %s, %s, %s, %s) AS c"
# Row by row in array order, in one transaction.
_CLAIMS = (
    "SELECT a.n, c.claimed, (c.connection).*"
    " FROM unnest(%s::text[], %s::text[], %s::jsonb[])"
    " WITH ORDINALITY AS a(document_id, agent_id, supersedes, n),"
    " LATERAL claim_document(a.document_id, a.agent_id, %s, %s, %s, a.supersedes) AS c"
    " ORDER BY a.n"
)
_SET_STATUS = "SELECT * FROM set_agent_status(%s, %s, %s, %s)"
# In array order: the lateral calls run row by row, each seeing the ones before.
_SET_STATUSES = (
    "SELECT count(s.agent_id) AS changed"
    " FROM unnest(%s::text[], %s::text[], %s::integer[], %s::jsonb[])"
    " WITH ORDINALITY AS c(agent_id, status, pid, metadata, n),"
    " LATERAL set_agent_status(c.agent_id, c.status, c.pid, c.metadata) AS s"
)
_END_LIFE = "SELECT * FROM end_agent_life(%s, %s, %s)"
_END_LIVES = (
    "SELECT e.* FROM unnest(%s::text[]) WITH ORDINALITY AS a(agent_id, n),"
    " LATERAL end_agent_life(a.agent_id, %s, %s) AS e ORDER BY a.n"
)
_RECORD_METRICS = "SELECT record_agent_metrics(%s) AS inserted"
_RECORD_METRICS_ONCE = "SELECT record_agent_metrics_once(%s, %s, %s) AS inserted"
_MANAGER_AGENTS = "SELECT * FROM get_manager_active_agents(%s)"
_PRUNE_HISTORY = "SELECT * FROM prune_history(%s, %s)"
_SYSTEM_STATS = "SELECT * FROM get_agent_system_stats()"
_LOAD_MEMORY = (
    "SELECT sentence_key AS key, extractor, status, places, attempts, error"
    " FROM load_extraction_memory(%s, %s)"
)
_RECORD_EXTRACTIONS = "SELECT record_extractions(%s, %s, %s, %s, %s, %s) AS stored"
_PRUNE_MEMORY = "SELECT prune_extraction_memory(%s, %s) AS deleted"
_EXTRACTION_STATS = "SELECT * FROM get_extraction_stats()"
_END_LIVES_AT = (
    "SELECT e.* FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[])"
    " WITH ORDINALITY AS a(agent_id, status, reason, ended_at, n),"
    " LATERAL end_agent_life_at(a.agent_id, a.status, a.reason, a.ended_at) AS e ORDER BY a.n"
)
_ACQUIRE_LEASE = (
    "SELECT a.acquired, a.took_over, (a.lease).*"
    " FROM acquire_manager_lease(%s, %s, %s, %s, %s, %s, %s, %s, %s) AS a"
)
_RELEASE_LEASE = "SELECT release_manager_lease(%s, %s) AS released"
_DRAIN_MANAGER = "SELECT drain_manager(%s) AS drained"
_LIST_LEASES = "SELECT * FROM list_manager_leases()"
_SWEEP_LEASES = "SELECT * FROM sweep_expired_leases()"
_CLAIMABLE = "SELECT d AS document_id FROM claimable_documents(%s::text[]) AS d"

# The lowest id missing from the last START_GAP_WINDOW ids: an INSERT that took
# its id but has not committed yet. Following from just below it delivers that
# row when it commits (or skips it after the listener's gap timeout).
_FIRST_MISSING_ID = """
SELECT min(g.id)
  FROM generate_series(greatest(%(top)s - %(window)s + 1, 1), %(top)s) AS g (id)
 WHERE NOT EXISTS (SELECT 1 FROM document_activity d WHERE d.id = g.id)
"""


def _supersede_json(supersedes: Mapping[str, Supersede] | None, agent_id: str) -> Jsonb | None:
    found = None if supersedes is None else supersedes.get(agent_id)
    return None if found is None else Jsonb(found.as_json())


def _agent_row(row: dict[str, Any]) -> AgentRow:
    metadata = row["metadata"]
    return AgentRow(
        id=row["id"] if isinstance(row["id"], uuid.UUID) else uuid.UUID(str(row["id"])),
        document_id=row["document_id"],
        agent_id=row["agent_id"],
        agent_pid=row["agent_pid"],
        status=row["status"],
        manager_id=row["manager_id"],
        manager_host=row["manager_host"],
        connected_at=row["connected_at"],
        metadata=metadata if isinstance(metadata, dict) else {},
        disconnected_at=row["disconnected_at"],
        error_message=row["error_message"],
        fence=row.get("fence"),
    )


def _lease(row: dict[str, Any]) -> ManagerLease:
    age = row.get("lease_age_s")
    live = row.get("live_agents")
    return ManagerLease(
        manager_id=row["manager_id"],
        instance_id=row["instance_id"],
        host=row["host"],
        pid=row["pid"],
        started_at=row["started_at"],
        renewed_at=row["renewed_at"],
        expires_at=row["expires_at"],
        capacity=row["capacity"],
        agents=row["agents"],
        state=row["state"],
        lease_age_s=None if age is None else float(age),
        live_agents=None if live is None else int(live),
    )


def _event(row: dict[str, Any]) -> ActivityEvent | None:
    """An event the manager can use, or None (logged) for a row it cannot."""
    document_id, event_type = row["document_id"], row["event_type"]
    timestamp, user_count = row["timestamp"], row["user_count"]
    problem = None
    if event_type not in EVENT_TYPES:
        problem = "unknown_event_type"
    elif not isinstance(document_id, str) or not document_id.strip():
        problem = "empty_document_id"
    elif len(document_id) > _MAX_DOCUMENT_ID:
        problem = "document_id_too_long"
    elif not isinstance(timestamp, datetime) or timestamp.tzinfo is None:
        problem = "bad_timestamp"
    elif not isinstance(user_count, int) or user_count < 0:
        problem = "bad_user_count"
    if problem is not None:
        log.warning(
            "activity_event_skipped",
            event_id=row["id"],
            problem=problem,
            event_type=str(event_type)[:40],
            document_id=str(document_id)[:80],
        )
        return None
    return ActivityEvent(
        id=row["id"],
        document_id=document_id,
        event_type=event_type,
        user_count=user_count,
        timestamp=timestamp,
        edit=row.get("reason") == "edit",
    )


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
            check=_check_connection,
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
            raise StoreUnavailable(f"database connection failed: {_brief(exc)}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"database refused a statement: {_brief(exc)}") from exc

    async def _fetchall(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        async with self._cursor() as cur:
            await cur.execute(query, params)
            return await cur.fetchall()

    # ------------------------------------------------------------- events

    async def latest_events(self) -> tuple[list[ActivityEvent], int]:
        """The latest usable event of every document up to the cursor, and the cursor.

        Both come from one snapshot. The cursor is the newest id, or just below
        an id missing among the newest :data:`START_GAP_WINDOW` (an INSERT still
        in flight), so the listener delivers that row when it commits.
        """
        async with self._cursor() as cur, cur.connection.transaction():
            await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            await cur.execute("SELECT coalesce(max(id), 0) AS top FROM document_activity")
            top = (await cur.fetchone() or {"top": 0})["top"]
            cursor = top
            if top > 0:
                await cur.execute(_FIRST_MISSING_ID, {"top": top, "window": START_GAP_WINDOW})
                first_missing = (await cur.fetchone() or {}).get("min")
                if first_missing is not None:
                    cursor = first_missing - 1
            await cur.execute(_LATEST_EVENTS, {"cursor": cursor})
            rows = await cur.fetchall()
        events = [event for row in rows if (event := _event(row)) is not None]
        events.sort(key=lambda e: e.id)
        return events, cursor

    async def read_events(self, cursor: int, limit: int = 1000) -> EventPage:
        rows = await self._fetchall(_READ_EVENTS, (cursor, limit))
        events = [event for row in rows if (event := _event(row)) is not None]
        return EventPage(events=events, ids=[row["id"] for row in rows])

    async def events_after(self, cursor: int, limit: int = 1000) -> list[ActivityEvent]:
        return (await self.read_events(cursor, limit)).events

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
        rows = await self._fetchall(
            _CLAIM,
            (
                document_id,
                agent_id,
                manager_id,
                manager_host,
                Jsonb(metadata or {}),
                None if supersedes is None else Jsonb(supersedes.as_json()),
            ),
        )
        if not rows:
            raise StoreError(f"claim_document returned nothing for {document_id!r}")
        row = rows[0]
        return ClaimResult(claimed=bool(row["claimed"]), row=_agent_row(row))

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
        rows = await self._fetchall(
            _CLAIMS,
            (
                [claims[i][0] for i in order],
                [claims[i][1] for i in order],
                [_supersede_json(supersedes, claims[i][1]) for i in order],
                manager_id,
                manager_host,
                Jsonb(metadata or {}),
            ),
        )
        if len(rows) != len(claims):
            raise StoreError(f"claim_document answered {len(rows)} of {len(claims)} claims")
        results: list[ClaimResult | None] = [None] * len(claims)
        for row in rows:
            position = order[int(row.pop("n")) - 1]
            results[position] = ClaimResult(claimed=bool(row.pop("claimed")), row=_agent_row(row))
        return [result for result in results if result is not None]

    async def set_agent_status(
        self,
        agent_id: str,
        status: str,
        pid: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AgentRow | None:
        rows = await self._fetchall(
            _SET_STATUS,
            (agent_id, status, pid, None if metadata is None else Jsonb(metadata)),
        )
        return _agent_row(rows[0]) if rows else None

    async def set_agent_statuses(self, changes: Sequence[StatusChange]) -> int:
        """One statement (one transaction) for all: a burst's status changes at once."""
        if not changes:
            return 0
        rows = await self._fetchall(
            _SET_STATUSES,
            (
                [c.agent_id for c in changes],
                [c.status for c in changes],
                [c.pid for c in changes],
                [None if c.metadata is None else Jsonb(c.metadata) for c in changes],
            ),
        )
        return int(rows[0]["changed"])

    async def end_agent_life(
        self, agent_id: str, status: str, reason: str | None
    ) -> AgentRow | None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"final status must be disconnected or error, not {status!r}")
        rows = await self._fetchall(_END_LIFE, (agent_id, status, reason))
        return _agent_row(rows[0]) if rows else None

    async def end_agent_lives(
        self, agent_ids: Sequence[str], status: str, reason: str | None
    ) -> list[AgentRow]:
        """One statement for all (crash recovery ends a whole fleet's rows at once)."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"final status must be disconnected or error, not {status!r}")
        if not agent_ids:
            return []
        rows = await self._fetchall(_END_LIVES, (list(agent_ids), status, reason))
        return [_agent_row(row) for row in rows]

    async def record_metrics(
        self, batch: Sequence[MetricsRecord], batch_id: BatchId | None = None
    ) -> int | None:
        if not batch:
            return 0
        records = Jsonb([record.as_json() for record in batch])
        if batch_id is None:
            rows = await self._fetchall(_RECORD_METRICS, (records,))
        else:
            rows = await self._fetchall(
                _RECORD_METRICS_ONCE, (batch_id.writer_id, batch_id.seq, records)
            )
        inserted = rows[0]["inserted"]
        return None if inserted is None else int(inserted)

    async def live_agents_of_manager(self, manager_id: str) -> list[AgentRow]:
        rows = await self._fetchall(_MANAGER_AGENTS, (manager_id,))
        return [_agent_row(row) for row in rows]

    async def end_agent_lives_at(
        self, ends: Sequence[tuple[str, str, str | None, datetime]]
    ) -> list[AgentRow]:
        """One statement for all: a writer's buffered ends, each with its real time."""
        if not ends:
            return []
        for _agent, status, _reason, _at in ends:
            if status not in FINAL_STATUSES:
                raise ValueError(f"final status must be disconnected or error, not {status!r}")
        rows = await self._fetchall(
            _END_LIVES_AT,
            (
                [e[0] for e in ends],
                [e[1] for e in ends],
                [e[2] for e in ends],
                [e[3] for e in ends],
            ),
        )
        return [_agent_row(row) for row in rows]

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
        rows = await self._fetchall(
            _ACQUIRE_LEASE,
            (manager_id, instance_id, host, pid, ttl_s, capacity, agents, state, replaces),
        )
        if not rows:
            raise StoreError("acquire_manager_lease returned nothing")
        row = rows[0]
        acquired, took_over = bool(row.pop("acquired")), bool(row.pop("took_over"))
        return LeaseAnswer(acquired=acquired, took_over=took_over, lease=_lease(row))

    async def release_lease(self, manager_id: str, instance_id: uuid.UUID) -> bool:
        rows = await self._fetchall(_RELEASE_LEASE, (manager_id, instance_id))
        return bool(rows and rows[0]["released"])

    async def drain_manager(self, manager_id: str) -> bool:
        rows = await self._fetchall(_DRAIN_MANAGER, (manager_id,))
        return bool(rows and rows[0]["drained"])

    async def list_leases(self) -> list[ManagerLease]:
        return [_lease(row) for row in await self._fetchall(_LIST_LEASES)]

    async def sweep_expired_leases(self) -> list[AgentRow]:
        return [_agent_row(row) for row in await self._fetchall(_SWEEP_LEASES)]

    async def claimable_documents(self, document_ids: Sequence[str]) -> list[str]:
        if not document_ids:
            return []
        rows = await self._fetchall(_CLAIMABLE, (list(document_ids),))
        return [row["document_id"] for row in rows]

    async def system_stats(self) -> SystemStats:
        rows = await self._fetchall(_SYSTEM_STATS)
        return SystemStats.from_row(rows[0])

    async def prune_history(self, older_than: timedelta, batch: int) -> tuple[int, int]:
        rows = await self._fetchall(_PRUNE_HISTORY, (older_than, batch))
        return int(rows[0]["metrics_deleted"]), int(rows[0]["activity_deleted"])

    async def load_extraction_memory(self, document_id: str, limit: int) -> list[dict[str, Any]]:
        return await self._fetchall(_LOAD_MEMORY, (document_id, limit))

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
        rows = await self._fetchall(
            _RECORD_EXTRACTIONS,
            (document_id, Jsonb(list(entries)), Jsonb(list(seen)), Jsonb(usage), cap, retention),
        )
        return int(rows[0]["stored"] or 0)

    async def prune_extraction_memory(self, older_than: timedelta, batch: int) -> int:
        rows = await self._fetchall(_PRUNE_MEMORY, (older_than, batch))
        return int(rows[0]["deleted"] or 0)

    async def extraction_stats(self) -> ExtractionStats:
        rows = await self._fetchall(_EXTRACTION_STATS)
        return ExtractionStats(**{name: int(value) for name, value in rows[0].items()})

    async def aclose(self) -> None:
        await self._pool.close()


async def _check_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's check before it hands out ``conn``: raise if it is unusable.

    An idle connection has nothing to read unless the server said something on
    its own: a termination notice, an EOF or a reset when the server (or its
    backend) went away, or a notification. Only then is the round-trip check
    worth paying; it raises on a dead connection and consumes anything else.
    """
    if conn.closed or conn.pgconn.status != psycopg.pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLPRI)
    if poller.poll(0):
        await psycopg_pool.AsyncConnectionPool.check_connection(conn)


#: SQLSTATEs of a connection refused for what it asked, not for the network: a role or
#: password the server rejects (invalid_authorization_specification, invalid_password)
#: or a database that does not exist (invalid_catalog_name).
_REFUSED_BY_CONFIGURATION = frozenset({"28000", "28P01", "3D000"})
_REFUSED_PHRASES = ("password authentication failed", "no pg_hba.conf entry", "does not exist")


def refused_by_configuration(exc: psycopg.OperationalError) -> bool:
    """Whether a failed connection attempt is the settings' fault (retrying cannot help)."""
    if exc.sqlstate in _REFUSED_BY_CONFIGURATION:
        return True
    text = str(exc)
    return any(phrase in text for phrase in _REFUSED_PHRASES)


#: libpq's words for a server that is not there at all: nothing listens on the port,
#: no such host name, no such socket. Retrying within the start cannot help (under
#: systemd, the unit's restart does the retrying).
_UNREACHABLE_PHRASES = (
    "connection refused",
    "could not translate host name",
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
    "no such file or directory",
    "no route to host",
    "network is unreachable",
)


def unreachable(exc: psycopg.OperationalError) -> bool:
    """Whether a failed attempt found no server at all (rather than a busy or starting one)."""
    text = str(exc).lower()
    return any(phrase in text for phrase in _UNREACHABLE_PHRASES)


def database_target(conninfo: str) -> str:
    """``host:port/dbname`` of a connection string (never its password or user)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(unparsable DATABASE_URL)"
    hosts = str(params.get("host") or params.get("hostaddr") or "localhost").split(",")
    ports = str(params.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    where = ",".join(
        f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in zip(hosts, ports, strict=False)
    )
    database = params.get("dbname") or params.get("user") or ""
    return f"{where}/{database}" if database else where


async def check_connectable(conninfo: str, *, timeout_s: float) -> None:
    """One connection attempt, so a refusal or an absent server is reported at once.

    Raises :class:`ConfigurationError` when the server rejects the credentials or the
    database name (systemd must not restart that in a loop), and
    :class:`StoreUnavailable` naming host, port and database when no server answers
    there (refused, unknown host). Any other failure (a timeout, a server starting
    up, too many connections) is left to the caller's retries.
    """
    try:
        conn = await psycopg.AsyncConnection.connect(
            conninfo, connect_timeout=max(1, round(timeout_s))
        )
    except psycopg.OperationalError as exc:
        if refused_by_configuration(exc):
            raise ConfigurationError(f"the database refused the connection: {_brief(exc)}") from exc
        if unreachable(exc):
            raise StoreUnavailable(
                f"cannot connect to the database {database_target(conninfo)}: {_reason(exc)}"
            ) from exc
        return
    await conn.close()


def _reason(exc: psycopg.Error) -> str:
    """libpq's reason after its "connection to server ... failed:" prefix."""
    text = _brief(exc)
    return text.rsplit(" failed: ", 1)[-1].strip() or text


def _brief(exc: psycopg.Error) -> str:
    """The server's message (or the first line of libpq's), never the conninfo."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


def libpq_environment(conninfo: str) -> dict[str, str]:
    """libpq environment variables (PGHOST, PGPASSWORD, ...) for a connection string.

    Used to hand a database to ``psql`` without putting a password on its
    command line, where ``ps`` would show it.
    """
    from psycopg.conninfo import conninfo_to_dict

    names = {
        "host": "PGHOST",
        "hostaddr": "PGHOSTADDR",
        "port": "PGPORT",
        "dbname": "PGDATABASE",
        "user": "PGUSER",
        "password": "PGPASSWORD",
        "sslmode": "PGSSLMODE",
        "sslrootcert": "PGSSLROOTCERT",
        "options": "PGOPTIONS",
        "application_name": "PGAPPNAME",
        "connect_timeout": "PGCONNECT_TIMEOUT",
    }
    return {
        names[key]: str(value)
        for key, value in conninfo_to_dict(conninfo).items()
        if key in names and value is not None
    }
