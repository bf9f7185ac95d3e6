"""One PostgREST session of a Supabase project, and the one place its errors are translated.

:class:`PostgrestSession` runs table reads and ``.rpc()`` calls with the
service_role key through ``supabase``'s client over our own ``httpx`` client
(retrying is the caller's decision, so the library's retries are off), and
turns every failure into the manager's exceptions:

* the network failed, or the gateway / PostgREST says the database is not
  reachable (HTTP 502, 503, 504, 520) -> :class:`~manager.errors.StoreUnavailable`
* the key was refused or lacks privileges (HTTP 401, 403) ->
  :class:`~manager.errors.ConfigurationError` (retrying cannot help)
* any other refusal (a SQL error, HTTP 4xx/500) -> :class:`~manager.errors.StoreError`

The service key is never logged and never part of an error message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
import httpx
from postgrest.exceptions import APIError
from pydantic import SecretStr
from supabase import AsyncClient, AsyncClientOptions, AsyncSupabaseException

from manager.errors import (
    ConfigurationError,
    DocagentsError,
    SchemaMissing,
    StoreError,
    StoreUnavailable,
    redact,
)

__all__ = ["PostgrestSession", "side_by_side"]

#: HTTP statuses of a refused key (also on the Realtime websocket upgrade).
_AUTH_STATUS = frozenset({401, 403})
#: PostgREST's codes for a function or table it cannot find (not in its schema
#: cache), and Postgres's own for an undefined table or function.
_SCHEMA_MISSING_CODES = frozenset({"PGRST202", "PGRST205", "42P01", "42883"})
_UNAVAILABLE_STATUS = frozenset({502, 503, 504, 520})
#: :func:`side_by_side`: requests in flight at once.
_CONCURRENT_RPCS = 8

_T = TypeVar("_T")


class _HttpRefusal(DocagentsError):
    """Raised by the response hook for a status that is not a SQL answer.

    It never leaves this module: :meth:`PostgrestSession.execute` translates it.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


async def _check_status(response: httpx.Response) -> None:
    if response.status_code in _AUTH_STATUS or response.status_code in _UNAVAILABLE_STATUS:
        await response.aread()
        try:
            body = response.json()
            message = str(body.get("message") or body) if isinstance(body, dict) else str(body)
        except ValueError:
            message = response.text[:200] or response.reason_phrase
        raise _HttpRefusal(response.status_code, message)


class PostgrestSession:
    """A Supabase project's PostgREST, called with the service_role key."""

    def __init__(self, url: str, service_key: SecretStr, *, timeout_s: float) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError("SUPABASE_URL must start with http:// or https://")
        self.url = url.rstrip("/")
        self._key = service_key
        http = httpx.AsyncClient(
            timeout=timeout_s,
            follow_redirects=True,
            event_hooks={"response": [_check_status]},
        )
        options = AsyncClientOptions(
            httpx_client=http,
            postgrest_client_retry=False,  # retrying is the caller's decision
            auto_refresh_token=False,
            persist_session=False,
        )
        try:
            self._client = AsyncClient(self.url, service_key.get_secret_value(), options)
        except AsyncSupabaseException as exc:
            raise ConfigurationError(
                f"cannot use SUPABASE_URL {self.url} with SUPABASE_SERVICE_KEY: "
                f"{redact(exc.message, service_key)}"
            ) from exc
        self._http = http

    async def select_after(self, table: str, cursor: int, limit: int) -> list[dict[str, Any]]:
        """Rows of ``table`` with ``id > cursor`` in id order, at most ``limit``."""
        query = self._client.table(table).select("*").gt("id", cursor).order("id").limit(limit)
        data = await self.execute(query, f"select {table}")
        return data if isinstance(data, list) else []

    async def rpc(self, function: str, params: dict[str, Any]) -> Any:
        """The JSON answer of the SQL function ``function`` called with ``params``."""
        return await self.execute(self._client.rpc(function, params), function)

    async def execute(self, query: Any, what: str) -> Any:
        """Run a postgrest request builder; its data, or the manager's exception."""
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
        except httpx.HTTPError as exc:
            detail = redact(str(exc) or type(exc).__name__, self._key)
            raise StoreError(f"{what}: bad answer from Supabase at {self.url}: {detail}") from exc
        except APIError as exc:
            detail = redact(f"{exc.code}: {exc.message}", self._key)
            if exc.code in _SCHEMA_MISSING_CODES:
                raise SchemaMissing(f"{what}: the docagents schema is missing: {detail}") from exc
            raise StoreError(f"{what} refused by Supabase: {detail}") from exc
        return response.data

    async def aclose(self) -> None:
        await self._http.aclose()


async def side_by_side(calls: Sequence[Callable[[], Awaitable[_T]]]) -> list[_T]:
    """Await ``calls`` with at most :data:`_CONCURRENT_RPCS` in flight; results in order.

    PostgREST runs one function per request, so a batch is this many requests.
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
