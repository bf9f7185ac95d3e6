"""The records the manager and its store exchange, as frozen dataclasses.

What the store reads (events, agent rows, leases, statistics) both backends
build from their rows with :mod:`manager.store.rows`, so the rest of the manager
never sees a driver's row; what the manager hands in to be written (status
changes, metrics records, batch ids, supersedes) says how it goes to the SQL
function it is for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "EVENT_TYPES",
    "FINAL_STATUSES",
    "ActivityEvent",
    "AgentRow",
    "BatchId",
    "ClaimResult",
    "EventPage",
    "ExtractionStats",
    "LeaseAnswer",
    "ManagerLease",
    "MetricsRecord",
    "StatusChange",
    "Supersede",
    "SystemStats",
]

#: The event types of ``document_activity`` the manager understands.
EVENT_TYPES = frozenset({"active", "idle", "user_joined", "user_left"})
#: Statuses that end an agent life (``end_agent_life``).
FINAL_STATUSES = frozenset({"disconnected", "error"})


@dataclass(frozen=True, slots=True)
class SystemStats:
    """One row of ``get_agent_system_stats()``.

    ``avg_memory_mb`` is the live agents' average PSS (see migrations/0009);
    ``total_*`` count every agent life ever recorded, ``live_*`` only the live ones.
    """

    total_agents: int
    active_agents: int
    connecting_agents: int
    avg_memory_mb: float | None
    total_llm_calls: int
    total_locations_marked: int
    unique_documents: int
    avg_rss_mb: float | None = None
    live_llm_calls: int = 0
    live_locations_marked: int = 0


@dataclass(frozen=True, slots=True)
class ExtractionStats:
    """One row of ``get_extraction_stats()``: the last hour's costs, and now's state."""

    sentences_sent_1h: int
    cache_hits_1h: int
    prompt_tokens_1h: int
    completion_tokens_1h: int
    failures_1h: int
    #: Sentences live agents still wait to extract (their last reports).
    pending: int
    #: Sentences given up (any document).
    failed: int
    #: Sentences whose result is remembered (any document).
    remembered: int


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    """One row of ``document_activity``; ``timestamp`` is timezone-aware."""

    id: int
    document_id: str
    event_type: str
    user_count: int
    timestamp: datetime
    #: an 'active' row the docserver wrote because people edit a document that has
    #: no agent connected (metadata ``reason: edit``): recency, not a new visit
    edit: bool = False


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of events read by id cursor (``id > cursor ORDER BY id LIMIT n``).

    ``ids`` are all the ids read, including rows skipped as unusable (logged),
    so a reader can tell a skipped row from an id not committed yet.
    """

    events: list[ActivityEvent]
    ids: list[int]


@dataclass(frozen=True, slots=True)
class AgentRow:
    """One row of ``agent_connections`` (one agent life)."""

    id: uuid.UUID
    document_id: str
    agent_id: str
    agent_pid: int | None
    status: str
    manager_id: str
    manager_host: str | None
    connected_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    disconnected_at: datetime | None = None
    error_message: str | None = None
    #: the life's fencing token: higher than every earlier life's of the document
    fence: int | None = None


@dataclass(frozen=True, slots=True)
class Supersede:
    """This manager's previous life of a document, ended by the next claim of it
    (with this status and reason) if its end has not been written yet."""

    agent_id: str
    status: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"agent_id": self.agent_id, "status": self.status, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """The answer of ``claim_document``."""

    #: True: we own the document now (``row.status == 'connecting'``)
    claimed: bool
    #: our new row, or the current live owner's row
    row: AgentRow


@dataclass(frozen=True, slots=True)
class ManagerLease:
    """One row of ``manager_leases`` (``list_manager_leases()`` adds age and agents)."""

    manager_id: str
    instance_id: uuid.UUID
    host: str | None
    pid: int | None
    started_at: datetime
    renewed_at: datetime
    expires_at: datetime
    capacity: int
    agents: int
    #: 'leading', 'draining', 'stopped', or (listed only) 'expired'
    state: str
    #: seconds since the last renewal, by the database's clock (listed only)
    lease_age_s: float | None = None
    #: live rows of this manager in agent_connections (listed only)
    live_agents: int | None = None


@dataclass(frozen=True, slots=True)
class LeaseAnswer:
    """The answer of ``acquire_manager_lease``."""

    #: True: the caller holds the lease now (``lease`` is its own)
    acquired: bool
    #: True: it took the lease from another instance (expired, stopped or proven dead)
    took_over: bool
    #: the caller's lease, or the live holder's
    lease: ManagerLease


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One ``set_agent_status`` call (:meth:`Store.set_agent_statuses`)."""

    agent_id: str
    status: str
    pid: int | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class BatchId:
    """Who sent a metrics batch and its number: ``record_agent_metrics_once`` records a
    batch whose number is not above the writer's last recorded one as a repeat."""

    writer_id: uuid.UUID
    seq: int


@dataclass(frozen=True, slots=True)
class MetricsRecord:
    """One element of ``record_agent_metrics``' batch (see migrations/0001_schema.sql)."""

    agent_id: str
    memory_mb: float | None = None
    pss_mb: float | None = None
    uss_mb: float | None = None
    cpu_percent: float | None = None
    websocket_latency_ms: float | None = None
    llm_response_time_ms: float | None = None
    llm_calls: int = 0
    locations_marked: int = 0
    recorded_at: datetime | None = None
    last_activity_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The JSON object ``record_agent_metrics`` expects (unset fields left out)."""
        out: dict[str, Any] = {"agent_id": self.agent_id}
        for name in (
            "memory_mb",
            "pss_mb",
            "uss_mb",
            "cpu_percent",
            "websocket_latency_ms",
            "llm_response_time_ms",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.llm_calls:
            out["llm_calls"] = self.llm_calls
        if self.locations_marked:
            out["locations_marked"] = self.locations_marked
        if self.recorded_at is not None:
            out["recorded_at"] = self.recorded_at.isoformat()
        if self.last_activity_at is not None:
            out["last_activity_at"] = self.last_activity_at.isoformat()
        return out
