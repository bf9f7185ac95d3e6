"""Rows of either backend into records, one parser per row kind.

psycopg hands over typed values (``datetime``, ``UUID``, ``dict``); PostgREST hands
over JSON (ISO 8601 strings, numbers, objects). Every parser here takes both, so
the two backends build the same records from the same SQL functions' rows and
treat a row they cannot use the same way: an activity row the manager cannot
use is logged and skipped (the reader moves past it), any other malformed row
is a :class:`~manager.errors.StoreError`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from manager.errors import StoreError
from manager.store.records import (
    EVENT_TYPES,
    FINAL_STATUSES,
    ActivityEvent,
    AgentRow,
    ExtractionStats,
    ManagerLease,
    SystemStats,
)

__all__ = [
    "MAX_DOCUMENT_ID",
    "START_GAP_WINDOW",
    "activity_event",
    "agent_row",
    "extraction_stats",
    "manager_lease",
    "memory_entry",
    "require_final_status",
    "system_stats",
]

log = structlog.get_logger(__name__)

#: At start, an id missing this far below the newest one is taken for an INSERT still
#: in flight: the start cursor stops just below it, so the row is delivered when it
#: commits (or skipped once the reader's gap timeout expires).
START_GAP_WINDOW = 1000
#: Longest document id the manager accepts in ``document_activity``.
MAX_DOCUMENT_ID = 512

Row = Mapping[str, Any]


def activity_event(row: Row) -> ActivityEvent | None:
    """The ``document_activity`` row as an event, or None (logged) if it is unusable.

    ``row`` has the table's columns; ``metadata.reason == 'edit'`` marks an edit.
    """
    document_id, event_type = row.get("document_id"), row.get("event_type")
    user_count = row.get("user_count")
    timestamp = _timestamp_or_none(row.get("timestamp"))
    problem = None
    if event_type not in EVENT_TYPES:
        problem = "unknown_event_type"
    elif not isinstance(document_id, str) or not document_id.strip():
        problem = "empty_document_id"
    elif len(document_id) > MAX_DOCUMENT_ID:
        problem = "document_id_too_long"
    elif timestamp is None or timestamp.tzinfo is None:
        problem = "bad_timestamp"
    elif not isinstance(user_count, int) or isinstance(user_count, bool) or user_count < 0:
        problem = "bad_user_count"
    if problem is not None or timestamp is None:
        log.warning(
            "activity_event_skipped",
            event_id=row.get("id"),
            problem=problem,
            event_type=str(event_type)[:40],
            document_id=str(document_id)[:80],
        )
        return None
    metadata = row.get("metadata")
    return ActivityEvent(
        id=int(row["id"]),
        document_id=str(document_id),
        event_type=str(event_type),
        user_count=int(user_count),
        timestamp=timestamp,
        edit=isinstance(metadata, dict) and metadata.get("reason") == "edit",
    )


def agent_row(row: Row) -> AgentRow:
    """An ``agent_connections`` row (what ``claim_document`` and friends return)."""
    try:
        disconnected = row.get("disconnected_at")
        metadata = row.get("metadata")
        return AgentRow(
            id=_uuid(row["id"]),
            document_id=str(row["document_id"]),
            agent_id=str(row["agent_id"]),
            agent_pid=_int_or_none(row.get("agent_pid")),
            status=str(row["status"]),
            manager_id=str(row["manager_id"]),
            manager_host=row.get("manager_host"),
            connected_at=_timestamp(row["connected_at"]),
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
            disconnected_at=None if disconnected is None else _timestamp(disconnected),
            error_message=row.get("error_message"),
            fence=_int_or_none(row.get("fence")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"unexpected agent_connections row: {exc!r}") from exc


def manager_lease(row: Row) -> ManagerLease:
    """A ``manager_leases`` row (``list_manager_leases()`` adds age and live agents)."""
    try:
        age, live = row.get("lease_age_s"), row.get("live_agents")
        return ManagerLease(
            manager_id=str(row["manager_id"]),
            instance_id=_uuid(row["instance_id"]),
            host=row.get("host"),
            pid=_int_or_none(row.get("pid")),
            started_at=_timestamp(row["started_at"]),
            renewed_at=_timestamp(row["renewed_at"]),
            expires_at=_timestamp(row["expires_at"]),
            capacity=int(row["capacity"]),
            agents=int(row["agents"]),
            state=str(row["state"]),
            lease_age_s=None if age is None else float(age),
            live_agents=None if live is None else int(live),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"unexpected manager_leases row: {exc!r}") from exc


def system_stats(row: Row) -> SystemStats:
    """The row of ``get_agent_system_stats()`` (numbers as the driver or JSON gives them)."""
    values: dict[str, Any] = {}
    try:
        for name in SystemStats.__dataclass_fields__:
            if name not in row:
                continue
            value = row[name]
            if name in ("avg_memory_mb", "avg_rss_mb"):
                values[name] = None if value is None else float(value)
            else:
                values[name] = int(value)
        return SystemStats(**values)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"unexpected get_agent_system_stats row: {exc!r}") from exc


def extraction_stats(row: Row) -> ExtractionStats:
    """The row of ``get_extraction_stats()``."""
    try:
        return ExtractionStats(**{name: int(value) for name, value in row.items()})
    except (TypeError, ValueError) as exc:
        raise StoreError(f"unexpected get_extraction_stats row: {exc!r}") from exc


def memory_entry(row: Row) -> dict[str, Any]:
    """A ``load_extraction_memory`` row as the worker's memory entry (``key`` for
    ``sentence_key``)."""
    return {
        "key": row.get("sentence_key"),
        **{name: row.get(name) for name in ("extractor", "status", "places", "attempts", "error")},
    }


def require_final_status(status: str) -> None:
    """Raise ValueError unless ``status`` ends a life (a caller's bug, not the database's)."""
    if status not in FINAL_STATUSES:
        raise ValueError(f"final status must be disconnected or error, not {status!r}")


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    raise TypeError(f"not a timestamp: {type(value).__name__}")


def _timestamp_or_none(value: Any) -> datetime | None:
    try:
        return _timestamp(value)
    except (TypeError, ValueError):
        return None


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
