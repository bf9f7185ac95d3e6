"""Writing document_activity rows, in order, surviving database outages.

:class:`ActivityWriter` keeps one FIFO for all documents, so the rows of one
document are inserted in the order they happened (and get increasing ids). Each
row carries the time its event happened, not the time it was written. While the
database is unreachable rows stay queued (bounded by ``max_buffer``; a warning
is logged when buffering starts and when it ends) and the writer retries with
backoff. On overflow, 'user_joined'/'user_left' rows go first; an 'active' or
'idle' row is only ever dropped with an error log naming it.

Before its first insert the writer reads which documents are 'active' (their
latest active/idle row), so the service can give them their 'idle' after the
grace when nobody reconnects (a restart never leaves an agent running forever).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
import psycopg
import structlog
from anyio.abc import TaskStatus

from docserver.presence import EventType

__all__ = [
    "ActivityEvent",
    "ActivitySink",
    "ActivityUnavailable",
    "ActivityWriter",
    "recent_documents",
]

log = structlog.get_logger(__name__)

_INSERT = (
    'INSERT INTO document_activity (document_id, event_type, user_count, "timestamp", metadata) '
    "VALUES (%s, %s, %s, %s, %s)"
)
_ACTIVE_DOCUMENTS = """
SELECT document_id FROM (
    SELECT DISTINCT ON (document_id) document_id, event_type
    FROM document_activity
    WHERE event_type IN ('active', 'idle')
    ORDER BY document_id, id DESC
) latest
WHERE event_type = 'active'
"""
_RECENT_DOCUMENTS = """
SELECT a.document_id, a.event_type, a."timestamp", a.user_count
FROM (
    SELECT max(id) AS id FROM document_activity
    WHERE event_type IN ('active', 'idle')
    GROUP BY document_id
    ORDER BY max(id) DESC
    LIMIT %s
) latest
JOIN document_activity a ON a.id = latest.id
ORDER BY a.id DESC
"""
_METADATA = json.dumps({"source": "docserver"})
_STATEMENT_TIMEOUT_S = 10.0
_CONNECT_TIMEOUT_S = 5


class ActivityUnavailable(Exception):
    """The activity table cannot be read right now (database or API unreachable)."""


class ActivitySink(Protocol):
    """What the service needs from an activity writer (Postgres here, Supabase in
    :mod:`docserver.supabase_activity`)."""

    @property
    def pending(self) -> int: ...

    def record(self, document_id: str, event_type: EventType, user_count: int) -> None: ...

    async def wait_drained(self) -> None: ...

    async def recent_documents(self, *, limit: int = 50) -> list[dict[str, object]]:
        """The home page's list; raises :class:`ActivityUnavailable`."""
        ...

    async def run(
        self,
        *,
        on_active_documents: Callable[[list[str]], None],
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    document_id: str
    event_type: EventType
    user_count: int
    timestamp: datetime


class ActivityWriter:
    def __init__(
        self, conninfo: str, *, max_buffer: int = 10_000, retry_max_s: float = 5.0
    ) -> None:
        self._conninfo = conninfo
        self._max_buffer = max_buffer
        self._retry_max_s = retry_max_s
        self._queue: deque[ActivityEvent] = deque()
        self._wake = anyio.Event()
        self._drained = anyio.Event()
        self._drained.set()
        self._running = False
        self._failing_since: float | None = None

    @property
    def pending(self) -> int:
        return len(self._queue)

    def record(self, document_id: str, event_type: EventType, user_count: int) -> None:
        """Queue a row (never blocks; the time is taken now)."""
        if len(self._queue) >= self._max_buffer:
            self._make_room()
        self._queue.append(ActivityEvent(document_id, event_type, user_count, datetime.now(UTC)))
        self._drained = anyio.Event() if self._drained.is_set() else self._drained
        self._wake.set()

    async def wait_drained(self) -> None:
        await self._drained.wait()

    async def recent_documents(self, *, limit: int = 50) -> list[dict[str, object]]:
        try:
            return await recent_documents(self._conninfo, limit=limit)
        except (psycopg.Error, TimeoutError) as exc:
            raise ActivityUnavailable(str(exc) or type(exc).__name__) from exc

    def _make_room(self) -> None:
        for index, event in enumerate(self._queue):
            if event.event_type in ("user_joined", "user_left"):
                del self._queue[index]
                log.warning("activity_buffer_full_dropped_join_row", dropped=_describe(event))
                return
        event = self._queue.popleft()
        log.error("activity_buffer_full_dropped_row", dropped=_describe(event))

    async def run(
        self,
        *,
        on_active_documents: Callable[[list[str]], None],
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read the active documents once, then insert queued rows until cancelled."""
        if self._running:
            raise RuntimeError("ActivityWriter.run() called twice")
        self._running = True
        task_status.started()
        conn: psycopg.AsyncConnection[Any] | None = None
        recovered = False
        delay = 0.1
        try:
            while True:
                if recovered and not self._queue:
                    self._drained.set()
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                try:
                    with anyio.fail_after(_STATEMENT_TIMEOUT_S):
                        if conn is None or conn.closed:
                            conn = await psycopg.AsyncConnection.connect(
                                self._conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
                            )
                        if not recovered:
                            cursor = await conn.execute(_ACTIVE_DOCUMENTS)
                            active = [row[0] for row in await cursor.fetchall()]
                            log.info("activity_active_documents_at_start", count=len(active))
                            on_active_documents(active)
                            recovered = True
                    await self._insert_queued(conn)
                    delay = 0.1
                    if self._failing_since is not None:
                        log.warning(
                            "activity_database_back",
                            down_for_s=round(anyio.current_time() - self._failing_since, 1),
                        )
                        self._failing_since = None
                except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as exc:
                    self._note_failure(exc, delay)
                    if conn is not None:
                        await conn.close()
                        conn = None
                    await anyio.sleep(delay)
                    delay = min(delay * 2, self._retry_max_s)
        finally:
            if conn is not None:
                with anyio.CancelScope(shield=True):
                    await conn.close()

    async def _insert_queued(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while self._queue:
            event = self._queue[0]
            try:
                with anyio.fail_after(_STATEMENT_TIMEOUT_S):
                    await conn.execute(
                        _INSERT,
                        (
                            event.document_id,
                            event.event_type,
                            event.user_count,
                            event.timestamp,
                            _METADATA,
                        ),
                    )
            except (psycopg.DataError, psycopg.IntegrityError):
                # the row itself is refused: retrying cannot help; say so, loudly
                log.exception("activity_row_refused", row=_describe(event))
            self._queue.popleft()

    def _note_failure(self, exc: Exception, delay: float) -> None:
        if self._failing_since is None:
            self._failing_since = anyio.current_time()
            log.warning(
                "activity_database_unreachable",
                error=str(exc) or type(exc).__name__,
                pending=len(self._queue),
                buffer_limit=self._max_buffer,
            )
        else:
            log.debug("activity_retry_failed", error=str(exc), retry_in_s=delay)


def _describe(event: ActivityEvent) -> dict[str, object]:
    return {
        "document_id": event.document_id,
        "event_type": event.event_type,
        "user_count": event.user_count,
        "timestamp": event.timestamp.isoformat(),
    }


async def recent_documents(conninfo: str, *, limit: int = 50) -> list[dict[str, object]]:
    """The latest active/idle row of the most recently used documents (for the home page)."""
    with anyio.fail_after(_STATEMENT_TIMEOUT_S):
        async with await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
        ) as conn:
            cursor = await conn.execute(_RECENT_DOCUMENTS, (limit,))
            rows = await cursor.fetchall()
    return [
        {
            "document_id": document_id,
            "last_event": event_type,
            "timestamp": timestamp.isoformat(),
            "user_count": user_count,
        }
        for document_id, event_type, timestamp, user_count in rows
    ]
