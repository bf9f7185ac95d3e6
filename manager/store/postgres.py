"""The Postgres backend of :class:`~manager.store.base.Store` (psycopg 3, async)."""

from __future__ import annotations

from typing import Self

import psycopg
from psycopg.rows import dict_row

from manager.errors import StoreError, StoreUnavailable
from manager.store.base import SystemStats

__all__ = ["PostgresStore"]


class PostgresStore:
    """Talks to Postgres through one connection per call site; see the manager's pool."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, conninfo: str) -> Self:
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot connect to the database: {exc}") from exc
        return cls(conn)

    async def system_stats(self) -> SystemStats:
        try:
            async with self._conn.cursor(row_factory=dict_row) as cur:
                await cur.execute("SELECT * FROM get_agent_system_stats()")
                row = await cur.fetchone()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc
        except psycopg.Error as exc:
            raise StoreError(str(exc)) from exc
        assert row is not None
        avg = row.pop("avg_memory_mb")
        return SystemStats(avg_memory_mb=None if avg is None else float(avg), **row)

    async def aclose(self) -> None:
        await self._conn.close()


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
