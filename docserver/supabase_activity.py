"""Writing document_activity rows through Supabase (PostgREST) when there is no DATABASE_URL.

:class:`SupabaseActivityWriter` has the public surface of
:class:`docserver.activity.ActivityWriter` (``record``, ``pending``,
``wait_drained``, ``run(*, on_active_documents, task_status)``) and the same
guarantees: one FIFO for all documents (rows of one document get increasing
ids), the event's own time in ``timestamp``, bounded buffering with retries
while Supabase is unreachable ('user_joined'/'user_left' dropped first). Queued
rows go out as one insert per batch; a batch refused by the database (a CHECK)
is retried row by row so only the bad row is dropped, loudly.

A refused key (HTTP 401/403) raises :class:`SupabaseKeyRefused` from
:meth:`run`: retrying cannot help. The key is never logged. This module does
not import ``manager`` (DESIGN.md: the docserver imports neither package).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import structlog
from postgrest.exceptions import APIError
from postgrest.types import ReturnMethod
from pydantic import SecretStr
from supabase import AsyncClient, AsyncClientOptions

from docserver.activity import (
    ActivityEvent,
    ActivityUnavailable,
    BufferedActivityWriter,
    describe_event,
)

__all__ = ["SupabaseActivityWriter", "SupabaseKeyRefused"]

log = structlog.get_logger(__name__)

_TABLE = "document_activity"
_BATCH = 500
_PAGE = 1000
_UNAVAILABLE = frozenset({502, 503, 504, 520})
_REFUSED = frozenset({401, 403})


class SupabaseKeyRefused(RuntimeError):
    """Supabase refused SUPABASE_SERVICE_KEY (HTTP 401/403)."""


class _Unavailable(Exception):
    pass


async def _check_status(response: httpx.Response) -> None:
    if response.status_code in _REFUSED:
        raise SupabaseKeyRefused(
            f"Supabase refused SUPABASE_SERVICE_KEY (HTTP {response.status_code}); "
            "use the project's service_role key"
        )
    if response.status_code in _UNAVAILABLE:
        raise _Unavailable(f"HTTP {response.status_code}")


class SupabaseActivityWriter(BufferedActivityWriter):
    transient = (httpx.TransportError, _Unavailable)

    def __init__(
        self,
        url: str,
        service_key: SecretStr,
        *,
        max_buffer: int = 10_000,
        retry_max_s: float = 5.0,
        timeout_s: float = 10.0,
    ) -> None:
        super().__init__(max_buffer=max_buffer, retry_max_s=retry_max_s)
        self.url = url.rstrip("/")
        self._key = service_key
        self._timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None
        self._client: AsyncClient | None = None

    def _rest(self) -> AsyncClient:
        if self._client is None:
            self._http = httpx.AsyncClient(
                timeout=self._timeout_s, event_hooks={"response": [_check_status]}
            )
            options = AsyncClientOptions(
                httpx_client=self._http,
                postgrest_client_retry=False,
                auto_refresh_token=False,
                persist_session=False,
            )
            self._client = AsyncClient(self.url, self._key.get_secret_value(), options)
        return self._client

    async def _read_active(self) -> list[str]:
        return await _active_documents(self._rest())

    async def _insert_queued(self) -> None:
        client = self._rest()
        while self._queue:
            batch = [self._queue[i] for i in range(min(_BATCH, len(self._queue)))]
            try:
                await _insert(client, batch)
            except APIError:
                if len(batch) > 1:  # find the refused row: one at a time
                    batch = batch[:1]
                    try:
                        await _insert(client, batch)
                    except APIError as exc:
                        log.error(  # noqa: TRY400  (the row is the news, not a traceback)
                            "activity_row_refused", row=describe_event(batch[0]), error=exc.message
                        )
                else:
                    raise
            for _ in batch:
                self._queue.popleft()

    async def _close(self) -> None:
        if self._http is not None:
            http, self._http, self._client = self._http, None, None
            await http.aclose()

    def _error_text(self, exc: BaseException) -> str:
        return str(exc).replace(self._key.get_secret_value(), "<redacted>") or type(exc).__name__

    async def recent_documents(self, *, limit: int = 50) -> list[dict[str, object]]:
        """The latest active/idle row of the most recently used documents (for the home page).

        Read from the newest active/idle rows (PostgREST has no GROUP BY here).
        """
        async with httpx.AsyncClient(
            timeout=self._timeout_s, event_hooks={"response": [_check_status]}
        ) as http:
            options = AsyncClientOptions(
                httpx_client=http, auto_refresh_token=False, persist_session=False
            )
            client = AsyncClient(self.url, self._key.get_secret_value(), options)
            query = (
                client.table(_TABLE)
                .select("*")
                .in_("event_type", ["active", "idle"])
                .order("id", desc=True)
                .limit(_PAGE)
            )
            try:
                rows = (await query.execute()).data
            except (httpx.HTTPError, _Unavailable, SupabaseKeyRefused, APIError) as exc:
                raise ActivityUnavailable(str(exc) or type(exc).__name__) from exc
        seen: dict[str, dict[str, object]] = {}
        for row in rows:
            if row["document_id"] not in seen:
                seen[row["document_id"]] = {
                    "document_id": row["document_id"],
                    "last_event": row["event_type"],
                    "timestamp": row["timestamp"],
                    "user_count": row["user_count"],
                }
            if len(seen) >= limit:
                break
        return list(seen.values())


async def _insert(client: AsyncClient, batch: list[ActivityEvent]) -> None:
    rows: list[dict[str, Any]] = [
        {
            "document_id": event.document_id,
            "event_type": event.event_type,
            "user_count": event.user_count,
            "timestamp": event.timestamp.isoformat(),
            "metadata": json.loads(event.metadata),
        }
        for event in batch
    ]
    await client.table(_TABLE).insert(rows, returning=ReturnMethod.minimal).execute()


async def _active_documents(client: AsyncClient) -> list[str]:
    """Documents whose latest active/idle row is 'active' (keyset scan by id)."""
    latest: dict[str, str] = {}
    cursor = 0
    while True:
        query = (
            client.table(_TABLE)
            .select("*")
            .in_("event_type", ["active", "idle"])
            .gt("id", cursor)
            .order("id")
            .limit(_PAGE)
        )
        rows = (await query.execute()).data
        for row in rows:
            latest[row["document_id"]] = row["event_type"]
        if len(rows) < _PAGE:
            return [doc for doc, event_type in latest.items() if event_type == "active"]
        cursor = int(rows[-1]["id"])
