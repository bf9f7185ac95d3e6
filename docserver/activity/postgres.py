"""Writing document_activity rows to Postgres with psycopg (the docserver's DATABASE_URL).

:class:`PostgresActivityWriter` inserts the queued rows of
:class:`~docserver.activity.buffer.BufferedActivityWriter` one at a time over
one autocommit connection, reconnecting after an outage. psycopg's errors are
translated here: a lost or refused connection and a statement timeout become
:class:`~docserver.errors.ActivityUnavailable` (retried); a row the database
refuses (a CHECK, a bad value) is dropped alone with an error log naming it;
any other database error becomes :class:`~docserver.errors.ActivityError` and
stops the writer (a missing table does not fix itself by retrying).
"""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import structlog

from docserver.activity.buffer import BufferedActivityWriter, describe_row
from docserver.errors import ActivityError, ActivityUnavailable

__all__ = ["PostgresActivityWriter"]

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
_STATEMENT_TIMEOUT_S = 10.0
_CONNECT_TIMEOUT_S = 5
#: Errors of the connection, not of a statement: the writer waits and retries.
_OUTAGES = (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError)


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class PostgresActivityWriter(BufferedActivityWriter):
    """Writes rows with one psycopg connection, reconnecting after failures."""

    def __init__(
        self, conninfo: str, *, max_buffer: int = 10_000, retry_max_s: float = 5.0
    ) -> None:
        super().__init__(max_buffer=max_buffer, retry_max_s=retry_max_s)
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def recent_documents(self, *, limit: int = 50) -> list[dict[str, object]]:
        """The latest active/idle row of the most recently used documents (the home page).

        Read on a connection of its own, so a slow page never holds up the writer.
        """
        try:
            with anyio.fail_after(_STATEMENT_TIMEOUT_S):
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
                ) as conn:
                    cursor = await conn.execute(_RECENT_DOCUMENTS, (limit,))
                    rows = await cursor.fetchall()
        except (psycopg.Error, TimeoutError) as exc:
            raise ActivityUnavailable(_text(exc)) from exc
        return [
            {
                "document_id": document_id,
                "last_event": event_type,
                "timestamp": timestamp.isoformat(),
                "user_count": user_count,
            }
            for document_id, event_type, timestamp, user_count in rows
        ]

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            with anyio.fail_after(_STATEMENT_TIMEOUT_S):
                self._conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
                )
        return self._conn

    async def _read_active(self) -> list[str]:
        try:
            conn = await self._connection()
            with anyio.fail_after(_STATEMENT_TIMEOUT_S):
                cursor = await conn.execute(_ACTIVE_DOCUMENTS)
                return [row[0] for row in await cursor.fetchall()]
        except _OUTAGES as exc:
            raise ActivityUnavailable(_text(exc)) from exc
        except psycopg.Error as exc:
            raise ActivityError(f"cannot read document_activity: {_text(exc)}") from exc

    async def _insert_queued(self) -> None:
        try:
            conn = await self._connection()
            while self._queue:
                row = self._queue[0]
                try:
                    with anyio.fail_after(_STATEMENT_TIMEOUT_S):
                        await conn.execute(
                            _INSERT,
                            (
                                row.document_id,
                                row.event_type,
                                row.user_count,
                                row.timestamp,
                                row.metadata,
                            ),
                        )
                except (psycopg.DataError, psycopg.IntegrityError):
                    # the row itself is refused: retrying cannot help; say so, loudly
                    log.exception("activity_row_refused", row=describe_row(row))
                self._queue.popleft()
        except _OUTAGES as exc:
            raise ActivityUnavailable(_text(exc)) from exc
        except psycopg.Error as exc:
            raise ActivityError(f"cannot write document_activity: {_text(exc)}") from exc

    async def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()
