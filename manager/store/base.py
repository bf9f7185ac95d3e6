"""The seam between the manager and its database: records and the Store protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Store", "SystemStats"]


@dataclass(frozen=True, slots=True)
class SystemStats:
    """One row of ``get_agent_system_stats()``."""

    total_agents: int
    active_agents: int
    connecting_agents: int
    avg_memory_mb: float | None
    total_llm_calls: int
    total_locations_marked: int
    unique_documents: int


class Store(Protocol):
    """What the manager needs from a database backend."""

    async def system_stats(self) -> SystemStats: ...

    async def aclose(self) -> None: ...
