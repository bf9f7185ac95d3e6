"""Writing document_activity rows through Supabase's REST API (PostgREST), without DATABASE_URL.

:class:`SupabaseActivityWriter` sends the queued rows of
:class:`~docserver.activity.buffer.BufferedActivityWriter` as one insert per
batch (the FIFO keeps each document's rows in order, so they get increasing
ids). A batch the database refuses because of a row (a CHECK, a bad value:
SQLSTATE class 22 or 23) is retried row by row, so only the bad row is dropped,
with an error log naming it.

The errors of httpx and postgrest are translated here: a transport error or an
HTTP 502/503/504/520 becomes :class:`~docserver.errors.ActivityUnavailable`
(retried while rows stay queued); HTTP 401/403 becomes
:class:`~docserver.errors.ActivityKeyRefused` (raised from :meth:`run` at
start: retrying cannot help); any other refusal becomes
:class:`~docserver.errors.ActivityError`. The key is never logged nor put in a
message.
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

from docserver.activity.buffer import ActivityRow, BufferedActivityWriter, describe_row
from docserver.errors import ActivityError, ActivityKeyRefused, ActivityUnavailable

__all__ = ["SupabaseActivityWriter"]

log = structlog.get_logger(__name__)

_TABLE = "document_activity"
_BATCH = 500
_PAGE = 1000
_UNAVAILABLE = frozenset({502, 503, 504, 520})
_REFUSED = frozenset({401, 403})
#: SQLSTATE classes of errors caused by the row itself (data exception, integrity).
_ROW_REFUSED_CLASSES = ("22", "23")


async def _check_status(response: httpx.Response) -> None:
    """httpx response hook: turn the statuses that mean "not this row" into our errors."""
    if response.status_code in _REFUSED:
        raise ActivityKeyRefused(
            f"Supabase refused SUPABASE_SERVICE_KEY (HTTP {response.status_code}); "
            "use the project's service_role key"
        )
    if response.status_code in _UNAVAILABLE:
        raise ActivityUnavailable(f"Supabase answered HTTP {response.status_code}")


def _row_refused(exc: APIError) -> bool:
    return (exc.code or "").startswith(_ROW_REFUSED_CLASSES)


class SupabaseActivityWriter(BufferedActivityWriter):
    """Writes rows through PostgREST with SUPABASE_SERVICE_KEY (a service_role key)."""

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

    def _unavailable(self, exc: Exception) -> ActivityUnavailable:
        text = str(exc).replace(self._key.get_secret_value(), "<redacted>")
        return ActivityUnavailable(text or type(exc).__name__)

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
        try:
            return await _active_documents(self._rest())
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        except APIError as exc:
            raise ActivityError(f"cannot read {_TABLE}: {exc.message}") from exc

    async def _insert_queued(self) -> None:
        client = self._rest()
        try:
            while self._queue:
                batch = [self._queue[i] for i in range(min(_BATCH, len(self._queue)))]
                try:
                    await _insert(client, batch)
                except APIError as exc:
                    if not _row_refused(exc):
                        raise
                    if len(batch) > 1:  # find the refused row: one at a time
                        batch = batch[:1]
                        try:
                            await _insert(client, batch)
                        except APIError as single:
                            if not _row_refused(single):
                                raise
                            _log_refused(batch[0], single)
                    else:
                        _log_refused(batch[0], exc)
                for _ in batch:
                    self._queue.popleft()
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        except APIError as exc:
            raise ActivityError(f"cannot write {_TABLE}: {exc.message}") from exc

    async def _close(self) -> None:
        if self._http is not None:
            http, self._http, self._client = self._http, None, None
            await http.aclose()

    async def recent_documents(self, *, limit: int = 50) -> list[dict[str, object]]:
        """The latest active/idle row of the most recently used documents (the home page).

        Read from the newest active/idle rows (PostgREST has no GROUP BY here), on
        a client of its own, so a slow page never holds up the writer.
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
            except ActivityUnavailable:
                raise
            except (httpx.HTTPError, ActivityError, APIError) as exc:
                # for the page, a refused key is one more reason it cannot be read
                raise self._unavailable(exc) from exc
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


def _log_refused(row: ActivityRow, exc: APIError) -> None:
    log.error("activity_row_refused", row=describe_row(row), error=exc.message)


async def _insert(client: AsyncClient, batch: list[ActivityRow]) -> None:
    rows: list[dict[str, Any]] = [
        {
            "document_id": row.document_id,
            "event_type": row.event_type,
            "user_count": row.user_count,
            "timestamp": row.timestamp.isoformat(),
            "metadata": json.loads(row.metadata),
        }
        for row in batch
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
