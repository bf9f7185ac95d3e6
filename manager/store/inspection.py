"""Read-only queries for ops commands (``docagents agents``), over the ops views.

Each live agent comes with its document's extraction state
(``document_extraction_state``): sentences waiting for the model, and given up.
"""

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
    #: Sentences the agent still waits to extract (its last report).
    extraction_pending: int = 0
    #: Sentences of the document given up by the model (the gazetteer marks them).
    extraction_failed: int = 0


async def fetch_live_agents(conninfo: str) -> list[LiveAgent]:
    query = (
        "SELECT a.document_id, a.agent_id, a.status, a.agent_pid, a.manager_id,"
        " a.manager_host, a.connected_at, a.uptime, a.memory_mb, a.cpu_percent,"
        " a.llm_calls_count, a.locations_marked_count, a.pss_mb, a.uss_mb,"
        " coalesce(e.pending, 0)::integer AS extraction_pending,"
        " coalesce(e.failed, 0)::integer AS extraction_failed"
        " FROM live_agents a"
        " LEFT JOIN document_extraction_state e ON e.document_id = a.document_id"
        " ORDER BY a.manager_id, a.connected_at"
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
