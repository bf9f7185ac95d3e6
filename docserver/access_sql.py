"""``DOCSERVER_AUTHZ=sql``: ask the database function ``can_open_document(subject, document_id)``.

Two backends, one function (migration 0008): Postgres through a small psycopg
pool on the docserver's ``DATABASE_URL``, or Supabase through PostgREST's
``/rest/v1/rpc/can_open_document`` with the service key. A database that cannot
answer denies (fail closed) and the refusal is logged; a client can retry.
"""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from docserver.auth import ACCESS_VALUES, Access, Principal

__all__ = ["PostgresAccess", "SupabaseAccess"]

log = structlog.get_logger(__name__)

_QUERY = "SELECT can_open_document(%s, %s)"
_TIMEOUT_S = 5.0


def _decision(value: Any) -> Access:
    return value if value in ACCESS_VALUES else "denied"


class PostgresAccess:
    def __init__(self, database_url: str) -> None:
        self._pool = AsyncConnectionPool(
            database_url,
            min_size=0,
            max_size=4,
            open=False,
            timeout=_TIMEOUT_S,
            kwargs={"autocommit": True, "connect_timeout": int(_TIMEOUT_S)},
        )

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def access(self, principal: Principal, document_id: str) -> Access:
        try:
            async with self._pool.connection() as conn:
                row = await (
                    await conn.execute(_QUERY, (principal.subject, document_id))
                ).fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("access_check_failed", document_id=document_id, error=type(exc).__name__)
            return "denied"
        return _decision(row[0] if row else None)


class SupabaseAccess:
    def __init__(self, supabase_url: str, service_key: SecretStr) -> None:
        self._url = supabase_url.rstrip("/") + "/rest/v1/rpc/can_open_document"
        key = service_key.get_secret_value()
        self._client = httpx.AsyncClient(
            headers={"apikey": key, "Authorization": f"Bearer {key}"}, timeout=_TIMEOUT_S
        )

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        await self._client.aclose()

    async def access(self, principal: Principal, document_id: str) -> Access:
        try:
            response = await self._client.post(
                self._url, json={"subject": principal.subject, "document_id": document_id}
            )
            response.raise_for_status()
            value = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("access_check_failed", document_id=document_id, error=type(exc).__name__)
            return "denied"
        return _decision(value)
