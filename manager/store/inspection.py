"""Read-only queries for ops commands (``docagents agents``), over the ops views."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from manager.errors import StoreError, StoreUnavailable

__all__ = ["LiveAgent", "fetch_live_agents"]


@dataclass(frozen=True, slots=True)
class LiveAgent:
    """One row of the ``live_agents`` view."""

    document_id: str
    agent_id: str
    status: str
    agent_pid: int | None
    manager_id: str
    manager_host: str | None
    connected_at: datetime
    uptime: timedelta
    memory_mb: float | None
    cpu_percent: float | None
    llm_calls_count: int
    locations_marked_count: int
    pss_mb: float | None
    uss_mb: float | None


async def fetch_live_agents(conninfo: str) -> list[LiveAgent]:
    query = (
        "SELECT document_id, agent_id, status, agent_pid, manager_id, manager_host,"
        " connected_at, uptime, memory_mb, cpu_percent, llm_calls_count,"
        " locations_marked_count, pss_mb, uss_mb"
        " FROM live_agents ORDER BY manager_id, connected_at"
    )
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query)
            rows = await cur.fetchall()
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"cannot connect to the database: {exc}") from exc
    except psycopg.Error as exc:
        raise StoreError(str(exc)) from exc
    agents = []
    for row in rows:
        for key in ("memory_mb", "cpu_percent", "pss_mb", "uss_mb"):
            if row[key] is not None:
                row[key] = float(row[key])
        agents.append(LiveAgent(**row))
    return agents
