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
from abc import ABC, abstractmethod
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
    "BufferedActivityWriter",
    "describe_event",
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

    def record(
        self,
        document_id: str,
        event_type: EventType,
        user_count: int,
        *,
        reason: str | None = None,
    ) -> None: ...

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
    #: why the row was written beyond its type ('edit': people edit, no agent there)
    reason: str | None = None

    @property
    def metadata(self) -> str:
        """The row's ``metadata`` column, as JSON text."""
        if self.reason is None:
            return _METADATA
        return json.dumps({"source": "docserver", "reason": self.reason})


class BufferedActivityWriter(ABC):
    """The queue, the drain signal and the retry loop; subclasses own the transport.

    Subclasses name their transient errors in ``transient`` (retried with backoff
    while rows stay queued) and implement :meth:`_read_active` and
    :meth:`_insert_queued` (which pops rows once they are written or refused).
    Any other exception from those stops :meth:`run`: retrying cannot help.
    """

    transient: tuple[type[BaseException], ...] = ()

    def __init__(self, *, max_buffer: int = 10_000, retry_max_s: float = 5.0) -> None:
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

    def record(
        self,
        document_id: str,
        event_type: EventType,
        user_count: int,
        *,
        reason: str | None = None,
    ) -> None:
        """Queue a row (never blocks; the time is taken now)."""
        if len(self._queue) >= self._max_buffer:
            self._make_room()
        self._queue.append(
            ActivityEvent(document_id, event_type, user_count, datetime.now(UTC), reason)
        )
        self._drained = anyio.Event() if self._drained.is_set() else self._drained
        self._wake.set()

    async def wait_drained(self) -> None:
        await self._drained.wait()

    @abstractmethod
    async def recent_documents(self, *, limit: int = 50) -> list[dict[str, object]]: ...

    @abstractmethod
    async def _read_active(self) -> list[str]:
        """Documents whose latest active/idle row is 'active'."""

    @abstractmethod
    async def _insert_queued(self) -> None:
        """Write queued rows in order, popping each once written (or refused)."""

    @abstractmethod
    async def _close(self) -> None:
        """Release the transport (after a transient error, and when :meth:`run` ends)."""

    def _error_text(self, exc: BaseException) -> str:
        return str(exc) or type(exc).__name__

    async def run(
        self,
        *,
        on_active_documents: Callable[[list[str]], None],
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read the active documents, then insert queued rows until cancelled.

        The first read happens before ``task_status.started()``: a permanent
        error (a refused credential) stops the service at start; a transient
        one is retried in the loop like any outage.
        """
        if self._running:
            raise RuntimeError(f"{type(self).__name__}.run() called twice")
        self._running = True
        recovered = False
        delay = 0.1
        try:
            try:
                recovered = self._recovered(await self._read_active(), on_active_documents)
            except self.transient as exc:
                await self._failed(exc, delay)
            task_status.started()
            while True:
                if recovered and not self._queue:
                    self._drained.set()
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                try:
                    if not recovered:
                        recovered = self._recovered(await self._read_active(), on_active_documents)
                    await self._insert_queued()
                    delay = 0.1
                    if self._failing_since is not None:
                        log.warning(
                            "activity_database_back",
                            down_for_s=round(anyio.current_time() - self._failing_since, 1),
                        )
                        self._failing_since = None
                except self.transient as exc:
                    await self._failed(exc, delay)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, self._retry_max_s)
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()

    @staticmethod
    def _recovered(active: list[str], on_active_documents: Callable[[list[str]], None]) -> bool:
        log.info("activity_active_documents_at_start", count=len(active))
        on_active_documents(active)
        return True

    async def _failed(self, exc: BaseException, delay: float) -> None:
        await self._close()  # reopened on the next attempt
        error = self._error_text(exc)
        if self._failing_since is None:
            self._failing_since = anyio.current_time()
            log.warning(
                "activity_database_unreachable",
                error=error,
                pending=len(self._queue),
                buffer_limit=self._max_buffer,
            )
        else:
            log.debug("activity_retry_failed", error=error, retry_in_s=delay)

    def _make_room(self) -> None:
        for index, event in enumerate(self._queue):
            if event.event_type in ("user_joined", "user_left") or event.reason == "edit":
                del self._queue[index]
                log.warning("activity_buffer_full_dropped_join_row", dropped=describe_event(event))
                return
        event = self._queue.popleft()
        log.error("activity_buffer_full_dropped_row", dropped=describe_event(event))


class ActivityWriter(BufferedActivityWriter):
    """Writes rows with one psycopg connection, reconnecting after failures."""

    transient = (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError)

    def __init__(
        self, conninfo: str, *, max_buffer: int = 10_000, retry_max_s: float = 5.0
    ) -> None:
        super().__init__(max_buffer=max_buffer, retry_max_s=retry_max_s)
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def recent_documents(self, *, limit: int = 50) -> list[dict[str, object]]:
        try:
            return await recent_documents(self._conninfo, limit=limit)
        except (psycopg.Error, TimeoutError) as exc:
            raise ActivityUnavailable(str(exc) or type(exc).__name__) from exc

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            with anyio.fail_after(_STATEMENT_TIMEOUT_S):
                self._conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
                )
        return self._conn

    async def _read_active(self) -> list[str]:
        conn = await self._connection()
        with anyio.fail_after(_STATEMENT_TIMEOUT_S):
            cursor = await conn.execute(_ACTIVE_DOCUMENTS)
            return [row[0] for row in await cursor.fetchall()]

    async def _insert_queued(self) -> None:
        conn = await self._connection()
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
                            event.metadata,
                        ),
                    )
            except (psycopg.DataError, psycopg.IntegrityError):
                # the row itself is refused: retrying cannot help; say so, loudly
                log.exception("activity_row_refused", row=describe_event(event))
            self._queue.popleft()

    async def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()


def describe_event(event: ActivityEvent) -> dict[str, object]:
    return {
        "document_id": event.document_id,
        "event_type": event.event_type,
        "user_count": event.user_count,
        "timestamp": event.timestamp.isoformat(),
        "reason": event.reason,
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
