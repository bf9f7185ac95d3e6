"""The backend-neutral half of an activity writer: the bounded queue, the drain signal, retries.

:class:`BufferedActivityWriter` keeps one FIFO of :class:`ActivityRow` for all
documents, so the rows of one document are inserted in the order they happened
(and get increasing ids). Each row carries the time its event happened, not the
time it was written. While the database is unreachable (a backend raises
:class:`~docserver.errors.ActivityUnavailable`) rows stay queued, bounded by
``max_buffer``, and the writer retries with backoff; a warning is logged when
the outage starts and when it ends, not on every retry. On overflow,
'user_joined'/'user_left' rows and ``reason: edit`` rows go first; an 'active'
or 'idle' row is only ever dropped with an error log naming it.

Before its first insert the writer reads which documents are 'active' (their
latest active/idle row is 'active') and hands them to the service, which gives
each its 'idle' after the grace unless someone reconnects: a restart never
leaves an agent running forever.

A backend subclass (:mod:`docserver.activity.postgres`,
:mod:`docserver.activity.supabase`) implements the transport methods and
translates its library's errors into :mod:`docserver.errors`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import anyio
import structlog
from anyio.abc import TaskStatus

from docserver.errors import ActivityUnavailable
from docserver.presence import EventType

__all__ = [
    "ActivityRow",
    "ActivitySink",
    "BufferedActivityWriter",
    "describe_row",
]

log = structlog.get_logger(__name__)

_METADATA = json.dumps({"source": "docserver"})


@dataclass(frozen=True, slots=True)
class ActivityRow:
    """One document_activity row waiting to be written."""

    document_id: str
    event_type: EventType
    user_count: int
    #: when the event happened (what the row's ``timestamp`` says)
    timestamp: datetime
    #: why the row was written beyond its type ('edit': people edit, no agent there)
    reason: str | None = None

    @property
    def metadata(self) -> str:
        """The row's ``metadata`` column, as JSON text."""
        if self.reason is None:
            return _METADATA
        return json.dumps({"source": "docserver", "reason": self.reason})


def describe_row(row: ActivityRow) -> dict[str, object]:
    """The row as log fields (for a row that is dropped or refused)."""
    return {
        "document_id": row.document_id,
        "event_type": row.event_type,
        "user_count": row.user_count,
        "timestamp": row.timestamp.isoformat(),
        "reason": row.reason,
    }


class ActivitySink(Protocol):
    """What the service and the app need from an activity writer."""

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
        """The home page's list; raises :class:`~docserver.errors.ActivityUnavailable`."""
        ...

    async def run(
        self,
        *,
        on_active_documents: Callable[[list[str]], None],
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None: ...


class BufferedActivityWriter(ABC):
    """The queue, the drain signal and the retry loop; subclasses own the transport.

    Subclasses implement :meth:`_read_active`, :meth:`_insert_queued` (which pops
    rows once they are written or refused), :meth:`_close` and
    :meth:`recent_documents`. They raise
    :class:`~docserver.errors.ActivityUnavailable` for an outage (retried with
    backoff while rows stay queued); any other exception stops :meth:`run`.
    """

    def __init__(self, *, max_buffer: int = 10_000, retry_max_s: float = 5.0) -> None:
        self._max_buffer = max_buffer
        self._retry_max_s = retry_max_s
        self._queue: deque[ActivityRow] = deque()
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
            ActivityRow(document_id, event_type, user_count, datetime.now(UTC), reason)
        )
        self._drained = anyio.Event() if self._drained.is_set() else self._drained
        self._wake.set()

    async def wait_drained(self) -> None:
        await self._drained.wait()

    @abstractmethod
    async def recent_documents(self, *, limit: int = 50) -> list[dict[str, object]]:
        """The latest active/idle row of the most recently used documents (the home page)."""

    @abstractmethod
    async def _read_active(self) -> list[str]:
        """Documents whose latest active/idle row is 'active'."""

    @abstractmethod
    async def _insert_queued(self) -> None:
        """Write queued rows in order, popping each once written (or refused)."""

    @abstractmethod
    async def _close(self) -> None:
        """Release the transport (after an outage, and when :meth:`run` ends)."""

    async def run(
        self,
        *,
        on_active_documents: Callable[[list[str]], None],
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read the active documents, then insert queued rows until cancelled.

        The first read happens before ``task_status.started()``: a permanent
        error (a refused key) stops the service at start; an outage is retried
        in the loop like any later one.
        """
        if self._running:
            raise RuntimeError(f"{type(self).__name__}.run() called twice")
        self._running = True
        recovered = False
        delay = 0.1
        try:
            try:
                recovered = self._recovered(await self._read_active(), on_active_documents)
            except ActivityUnavailable as exc:
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
                except ActivityUnavailable as exc:
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

    async def _failed(self, exc: ActivityUnavailable, delay: float) -> None:
        await self._close()  # reopened on the next attempt
        error = str(exc) or type(exc).__name__
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
        for index, row in enumerate(self._queue):
            if row.event_type in ("user_joined", "user_left") or row.reason == "edit":
                del self._queue[index]
                log.warning("activity_buffer_full_dropped_join_row", dropped=describe_row(row))
                return
        row = self._queue.popleft()
        log.error("activity_buffer_full_dropped_row", dropped=describe_row(row))
