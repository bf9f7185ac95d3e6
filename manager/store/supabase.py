"""The Supabase backend of :class:`~manager.store.base.Store`: PostgREST through ``supabase``.

Every atomic state change calls the same SQL function as the Postgres backend,
through ``.rpc()`` (``claim_document``, ``set_agent_status``, ``end_agent_life``,
``record_agent_metrics_once``, ``get_agent_system_stats``, ``get_manager_active_agents``,
and the fleet's ``acquire_manager_lease``, ``release_manager_lease``,
``list_manager_leases``, ``drain_manager``, ``sweep_expired_leases``, ``claimable_documents``,
``end_agent_life_at``);
a batch of metrics is one rpc call. Events are read by id cursor with a plain
select (``id=gt.N&order=id.asc&limit=N``).

Errors are translated here, once:

* the network failed, or the gateway / PostgREST says the database is not
  reachable (HTTP 502, 503, 504, 520) -> :class:`~manager.errors.StoreUnavailable`
* the key was refused or lacks privileges (HTTP 401, 403) ->
  :class:`~manager.errors.ConfigurationError` (retrying cannot help)
* any other refusal (a SQL error, HTTP 4xx/500) -> :class:`~manager.errors.StoreError`

The service key is never logged and never part of an error message.

Ids are taken at INSERT and become visible at COMMIT; the reader
(:class:`manager.events.listen.EventCursor`) keeps holes open for a while, so pages
here are plain ``id > cursor`` reads with every id read reported.
"""

from __future__ import annotations

import functools
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Self, TypeVar

import anyio
import httpx
import structlog
from postgrest.exceptions import APIError
from pydantic import SecretStr
from supabase import AsyncClient, AsyncClientOptions

from manager.errors import ConfigurationError, DocagentsError, StoreError, StoreUnavailable
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
from manager.store.postgres import START_GAP_WINDOW

__all__ = ["SupabaseStore", "redact"]

log = structlog.get_logger(__name__)

_UNAVAILABLE_STATUS = frozenset({502, 503, 504, 520})
_AUTH_STATUS = frozenset({401, 403})
_TABLE = "document_activity"
_PAGE = 1000
_MAX_DOCUMENT_ID = 512
#: ``end_agent_lives``: requests in flight at once.
_CONCURRENT_RPCS = 8


class _HttpRefusal(Exception):
    """Raised by the response hook for a status that is not a SQL answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def redact(text: str, secret: SecretStr | str | None) -> str:
    """``text`` with every occurrence of the secret replaced (for error messages)."""
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    return text.replace(value, "<redacted>") if value else text


async def _check_status(response: httpx.Response) -> None:
    if response.status_code in _AUTH_STATUS or response.status_code in _UNAVAILABLE_STATUS:
        await response.aread()
        try:
            body = response.json()
            message = str(body.get("message") or body) if isinstance(body, dict) else str(body)
        except ValueError:
            message = response.text[:200] or response.reason_phrase
        raise _HttpRefusal(response.status_code, message)


class SupabaseStore:
    """Talks to a Supabase project's PostgREST with the service_role key."""

    def __init__(
        self,
        url: str,
        service_key: SecretStr,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError("SUPABASE_URL must start with http:// or https://")
        self.url = url.rstrip("/")
        self._key = service_key
        self._http = httpx.AsyncClient(
            timeout=timeout_s,
            follow_redirects=True,
            event_hooks={"response": [_check_status]},
        )
        options = AsyncClientOptions(
            httpx_client=self._http,
            postgrest_client_retry=False,  # retrying is the caller's decision
            auto_refresh_token=False,
            persist_session=False,
        )
        self._client = AsyncClient(self.url, service_key.get_secret_value(), options)

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
        the newest :data:`START_GAP_WINDOW` (an INSERT still in flight), so the
        reader delivers that row when it commits.
        """
        latest: dict[str, ActivityEvent] = {}
        recent: deque[dict[str, Any]] = deque()
        top = 0
        while True:
            rows = await self._select_after(top, _PAGE)
            for row in rows:
                recent.append(row)
                top = int(row["id"])
                while recent and int(recent[0]["id"]) <= top - START_GAP_WINDOW:
                    self._fold(latest, recent.popleft())
            if len(rows) < _PAGE:
                break
        present = {int(row["id"]) for row in recent}
        missing = [
            i for i in range(max(top - START_GAP_WINDOW + 1, 1), top + 1) if i not in present
        ]
        cursor = missing[0] - 1 if missing else top
        for row in recent:
            if int(row["id"]) <= cursor:
                self._fold(latest, row)
        return sorted(latest.values(), key=lambda e: e.id), cursor

    @classmethod
    def _fold(cls, latest: dict[str, ActivityEvent], row: dict[str, Any]) -> None:
        event = _event(row)
        if event is not None:
            latest[event.document_id] = event

    async def read_events(self, cursor: int, limit: int = 1000) -> EventPage:
        rows = await self._select_after(cursor, limit)
        events = [event for row in rows if (event := _event(row)) is not None]
        return EventPage(events=events, ids=[int(row["id"]) for row in rows])

    async def events_after(self, cursor: int, limit: int = 1000) -> list[ActivityEvent]:
        return (await self.read_events(cursor, limit)).events

    async def _select_after(self, cursor: int, limit: int) -> list[dict[str, Any]]:
        query = self._client.table(_TABLE).select("*").gt("id", cursor).order("id").limit(limit)
        data = await self._execute(query, "select document_activity")
        return data if isinstance(data, list) else []

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
        data = await self._rpc("claim_document", params)
        if not isinstance(data, list) or len(data) != 1:
            raise StoreError(f"claim_document returned {len(data or [])} rows, expected 1")
        return ClaimResult(claimed=bool(data[0]["claimed"]), row=_agent_row(data[0]["connection"]))

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
        return await _side_by_side(
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
        return _first_row(await self._rpc("set_agent_status", params))

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
        return _first_row(await self._rpc("end_agent_life", params))

    async def end_agent_lives(
        self, agent_ids: Sequence[str], status: str, reason: str | None
    ) -> list[AgentRow]:
        """``end_agent_life`` calls side by side (PostgREST runs one function per request)."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"final status must be disconnected or error, not {status!r}")
        rows = await _side_by_side(
            [functools.partial(self.end_agent_life, a, status, reason) for a in agent_ids]
        )
        return [row for row in rows if row is not None]

    async def record_metrics(
        self, batch: Sequence[MetricsRecord], batch_id: BatchId | None = None
    ) -> int | None:
        if not batch:
            return 0
        records = [r.as_json() for r in batch]
        if batch_id is None:
            data = await self._rpc("record_agent_metrics", {"p_batch": records})
            return int(data or 0)
        data = await self._rpc(
            "record_agent_metrics_once",
            {
                "p_writer_id": str(batch_id.writer_id),
                "p_batch_seq": batch_id.seq,
                "p_batch": records,
            },
        )
        return None if data is None else int(data)

    async def live_agents_of_manager(self, manager_id: str) -> list[AgentRow]:
        data = await self._rpc("get_manager_active_agents", {"manager_id_param": manager_id})
        return [_agent_row(row) for row in data or []]

    async def end_agent_lives_at(
        self, ends: Sequence[tuple[str, str, str | None, datetime]]
    ) -> list[AgentRow]:
        """``end_agent_life_at`` calls side by side (one function per request)."""
        for _agent, status, _reason, _at in ends:
            if status not in FINAL_STATUSES:
                raise ValueError(f"final status must be disconnected or error, not {status!r}")

        async def one(agent: str, status: str, reason: str | None, at: datetime) -> Any:
            params = {
                "p_agent_id": agent,
                "p_status": status,
                "p_reason": reason,
                "p_ended_at": at.isoformat(),
            }
            return _first_row(await self._rpc("end_agent_life_at", params))

        rows = await _side_by_side([functools.partial(one, *end) for end in ends])
        return [row for row in rows if row is not None]

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
        data = await self._rpc("acquire_manager_lease", params)
        if not isinstance(data, list) or len(data) != 1:
            raise StoreError("acquire_manager_lease returned no row")
        row = data[0]
        return LeaseAnswer(
            acquired=bool(row["acquired"]),
            took_over=bool(row["took_over"]),
            lease=_lease(row["lease"]),
        )

    async def release_lease(self, manager_id: str, instance_id: uuid.UUID) -> bool:
        params = {"p_manager_id": manager_id, "p_instance_id": str(instance_id)}
        return bool(await self._rpc("release_manager_lease", params))

    async def drain_manager(self, manager_id: str) -> bool:
        return bool(await self._rpc("drain_manager", {"p_manager_id": manager_id}))

    async def list_leases(self) -> list[ManagerLease]:
        data = await self._rpc("list_manager_leases", {})
        return [_lease(row) for row in data or []]

    async def sweep_expired_leases(self) -> list[AgentRow]:
        data = await self._rpc("sweep_expired_leases", {})
        return [_agent_row(row) for row in data or []]

    async def claimable_documents(self, document_ids: Sequence[str]) -> list[str]:
        if not document_ids:
            return []
        data = await self._rpc("claimable_documents", {"p_document_ids": list(document_ids)})
        return [str(item) for item in data or []]

    async def system_stats(self) -> SystemStats:
        data = await self._rpc("get_agent_system_stats", {})
        if not isinstance(data, list) or not data:
            raise StoreError("get_agent_system_stats returned no row")
        return SystemStats.from_row(data[0])

    async def prune_history(self, older_than: timedelta, batch: int) -> tuple[int, int]:
        params = {"p_older_than": f"{older_than.total_seconds()} seconds", "p_batch": batch}
        data = await self._rpc("prune_history", params)
        if not isinstance(data, list) or not data:
            raise StoreError("prune_history returned no row")
        return int(data[0]["metrics_deleted"]), int(data[0]["activity_deleted"])

    async def load_extraction_memory(self, document_id: str, limit: int) -> list[dict[str, Any]]:
        data = await self._rpc(
            "load_extraction_memory", {"p_document_id": document_id, "p_limit": limit}
        )
        rows = data if isinstance(data, list) else []
        return [
            {
                "key": row.get("sentence_key"),
                **{k: row.get(k) for k in ("extractor", "status", "places", "attempts", "error")},
            }
            for row in rows
            if isinstance(row, dict)
        ]

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
        data = await self._rpc(
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
        return int(await self._rpc("prune_extraction_memory", params) or 0)

    async def extraction_stats(self) -> ExtractionStats:
        data = await self._rpc("get_extraction_stats", {})
        if not isinstance(data, list) or not data:
            raise StoreError("get_extraction_stats returned no row")
        return ExtractionStats(**{name: int(value) for name, value in dict(data[0]).items()})

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- one place for errors -----------------------------------------------------

    async def _rpc(self, function: str, params: dict[str, Any]) -> Any:
        return await self._execute(self._client.rpc(function, params), function)

    async def _execute(self, query: Any, what: str) -> Any:
        try:
            response = await query.execute()
        except _HttpRefusal as exc:
            message = redact(exc.message, self._key)
            if exc.status in _AUTH_STATUS:
                raise ConfigurationError(
                    f"Supabase at {self.url} refused SUPABASE_SERVICE_KEY for {what} "
                    f"(HTTP {exc.status}: {message}); use the project's service_role key"
                ) from exc
            raise StoreUnavailable(
                f"Supabase at {self.url} is unavailable (HTTP {exc.status}: {message})"
            ) from exc
        except httpx.TransportError as exc:
            detail = redact(str(exc) or type(exc).__name__, self._key)
            raise StoreUnavailable(f"cannot reach Supabase at {self.url}: {detail}") from exc
        except APIError as exc:
            detail = redact(f"{exc.code}: {exc.message}", self._key)
            raise StoreError(f"{what} refused by Supabase: {detail}") from exc
        return response.data


_T = TypeVar("_T")


async def _side_by_side(calls: Sequence[Callable[[], Awaitable[_T]]]) -> list[_T]:
    """Await ``calls`` with at most :data:`_CONCURRENT_RPCS` in flight; results in order.

    The first failure comes out as itself (not as an exception group).
    """
    results: dict[int, _T] = {}
    limiter = anyio.CapacityLimiter(_CONCURRENT_RPCS)

    async def run(n: int, call: Callable[[], Awaitable[_T]]) -> None:
        async with limiter:
            results[n] = await call()

    try:
        async with anyio.create_task_group() as tg:
            for n, call in enumerate(calls):
                tg.start_soon(run, n, call)
    except* DocagentsError as group:
        raise group.exceptions[0] from None
    return [results[n] for n in range(len(calls))]


def _event(row: dict[str, Any]) -> ActivityEvent | None:
    """An event the manager can use, or None (logged) for a row it cannot."""
    document_id, event_type = row.get("document_id"), row.get("event_type")
    user_count = row.get("user_count")
    problem = None
    try:
        timestamp: datetime | None = datetime.fromisoformat(row["timestamp"])
    except (KeyError, TypeError, ValueError):
        timestamp = None
    if event_type not in EVENT_TYPES:
        problem = "unknown_event_type"
    elif not isinstance(document_id, str) or not document_id.strip():
        problem = "empty_document_id"
    elif len(document_id) > _MAX_DOCUMENT_ID:
        problem = "document_id_too_long"
    elif timestamp is None or timestamp.tzinfo is None:
        problem = "bad_timestamp"
    elif not isinstance(user_count, int) or user_count < 0:
        problem = "bad_user_count"
    if problem is not None or timestamp is None:
        log.warning(
            "activity_event_skipped",
            event_id=row.get("id"),
            problem=problem,
            event_type=str(event_type)[:40],
            document_id=str(document_id)[:80],
        )
        return None
    return ActivityEvent(
        id=int(row["id"]),
        document_id=str(document_id),
        event_type=str(event_type),
        user_count=int(user_count),
        timestamp=timestamp,
        edit=isinstance(metadata := row.get("metadata"), dict) and metadata.get("reason") == "edit",
    )


def _first_row(data: Any) -> AgentRow | None:
    return _agent_row(data[0]) if isinstance(data, list) and data else None


def _lease(row: dict[str, Any]) -> ManagerLease:
    try:
        age, live = row.get("lease_age_s"), row.get("live_agents")
        return ManagerLease(
            manager_id=row["manager_id"],
            instance_id=uuid.UUID(str(row["instance_id"])),
            host=row.get("host"),
            pid=row.get("pid"),
            started_at=datetime.fromisoformat(row["started_at"]),
            renewed_at=datetime.fromisoformat(row["renewed_at"]),
            expires_at=datetime.fromisoformat(row["expires_at"]),
            capacity=int(row["capacity"]),
            agents=int(row["agents"]),
            state=str(row["state"]),
            lease_age_s=None if age is None else float(age),
            live_agents=None if live is None else int(live),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"unexpected manager_leases row from Supabase: {exc}") from exc


def _agent_row(row: dict[str, Any]) -> AgentRow:
    try:
        disconnected = row.get("disconnected_at")
        return AgentRow(
            id=uuid.UUID(row["id"]),
            document_id=row["document_id"],
            agent_id=row["agent_id"],
            agent_pid=row.get("agent_pid"),
            status=row["status"],
            manager_id=row["manager_id"],
            manager_host=row.get("manager_host"),
            connected_at=datetime.fromisoformat(row["connected_at"]),
            metadata=dict(row.get("metadata") or {}),
            disconnected_at=datetime.fromisoformat(disconnected) if disconnected else None,
            error_message=row.get("error_message"),
            fence=_int_or_none(row.get("fence")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"unexpected agent_connections row from Supabase: {exc}") from exc


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
