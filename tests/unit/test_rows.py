"""manager.store.rows: one parser for psycopg's typed rows and PostgREST's JSON rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from manager.errors import ConfigurationError, StoreError
from manager.store import rows
from manager.store.supabase import SupabaseStore

AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
ROW_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def typed_agent_row() -> dict[str, Any]:
    """As psycopg hands it over."""
    return {
        "id": ROW_ID,
        "document_id": "doc",
        "agent_id": "agent-1",
        "agent_pid": 42,
        "status": "active",
        "manager_id": "m1",
        "manager_host": "host",
        "connected_at": AT,
        "metadata": {"k": 1},
        "disconnected_at": None,
        "error_message": None,
        "fence": 7,
    }


def json_agent_row() -> dict[str, Any]:
    """The same row as PostgREST hands it over."""
    return {**typed_agent_row(), "id": str(ROW_ID), "connected_at": AT.isoformat()}


def test_an_agent_row_is_the_same_record_from_either_backend() -> None:
    typed, json = rows.agent_row(typed_agent_row()), rows.agent_row(json_agent_row())
    assert typed == json
    assert typed.id == ROW_ID and typed.connected_at == AT and typed.fence == 7


def test_a_malformed_agent_row_is_a_store_error() -> None:
    bad = {**json_agent_row(), "connected_at": "yesterday"}
    with pytest.raises(StoreError, match="agent_connections"):
        rows.agent_row(bad)
    missing = json_agent_row()
    del missing["status"]
    with pytest.raises(StoreError, match="agent_connections"):
        rows.agent_row(missing)


def test_a_lease_row_parses_from_json() -> None:
    lease = rows.manager_lease(
        {
            "manager_id": "m1",
            "instance_id": str(ROW_ID),
            "host": "h",
            "pid": 9,
            "started_at": AT.isoformat(),
            "renewed_at": AT.isoformat(),
            "expires_at": AT.isoformat(),
            "capacity": "10",
            "agents": 3,
            "state": "leading",
            "lease_age_s": "1.5",
            "live_agents": None,
        }
    )
    assert lease.instance_id == ROW_ID and lease.capacity == 10 and lease.lease_age_s == 1.5
    assert lease.live_agents is None


def test_activity_events_from_either_backend_and_unusable_rows_skipped() -> None:
    typed = {
        "id": 5,
        "document_id": "d",
        "event_type": "active",
        "user_count": 2,
        "timestamp": AT,
        "metadata": {"reason": "edit"},
    }
    json = {**typed, "timestamp": AT.isoformat()}
    assert rows.activity_event(typed) == rows.activity_event(json)
    event = rows.activity_event(json)
    assert event is not None and event.edit and event.timestamp == AT
    plain = rows.activity_event({**typed, "metadata": None})
    assert plain is not None and not plain.edit
    for unusable in (
        {**typed, "event_type": "exploded"},
        {**typed, "document_id": "   "},
        {**typed, "document_id": "x" * (rows.MAX_DOCUMENT_ID + 1)},
        {**typed, "timestamp": "not a time"},
        {**typed, "timestamp": AT.replace(tzinfo=None)},
        {**typed, "user_count": -1},
        {**typed, "user_count": True},
    ):
        assert rows.activity_event(unusable) is None


def test_final_statuses_only() -> None:
    rows.require_final_status("error")
    with pytest.raises(ValueError, match="final status"):
        rows.require_final_status("active")


def test_an_empty_supabase_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="SUPABASE_SERVICE_KEY"):
        SupabaseStore("https://project.supabase.co", SecretStr(""))
