"""SupabaseStore against the PostgREST double: exact requests, real SQL semantics behind."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from pydantic import SecretStr

from manager.errors import StoreError, StoreUnavailable
from manager.store.base import BatchId, MetricsRecord, StatusChange
from manager.store.supabase import SupabaseStore
from tests.integration.lease_support import hold_lease
from tests.integration.supabase_doubles import SupabaseDouble, serve_supabase

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _leases(database_url: str) -> None:
    """claim_document needs a valid lease."""
    hold_lease(database_url, "m1")
    hold_lease(database_url, "m2")


@pytest.fixture
async def supabase(database_url: str) -> AsyncIterator[SupabaseDouble]:
    async with serve_supabase(database_url) as double:
        yield double
        assert double.unexpected == []


async def test_store_calls_the_sql_functions_through_rpc(
    supabase: SupabaseDouble, db: psycopg.Connection
) -> None:
    db.execute(
        "INSERT INTO document_activity (document_id, event_type) VALUES"
        " ('a', 'active'), ('b', 'active'), ('a', 'idle')"
    )
    store = await SupabaseStore.connect(supabase.url, SecretStr(supabase.key))
    try:
        latest, cursor = await store.latest_events()
        assert [(e.id, e.document_id, e.event_type) for e in latest] == [
            (2, "b", "active"),
            (3, "a", "idle"),
        ]
        assert cursor == 3
        page = await store.read_events(1, limit=10)
        assert page.ids == [2, 3]
        assert latest[0].timestamp.tzinfo is not None

        claim = await store.claim_document("a", "agent-1", "m1", "host", {"x": 1})
        assert claim.claimed and claim.row.status == "connecting" and claim.row.metadata == {"x": 1}
        other = await store.claim_document("a", "agent-2", "m2", None)
        assert not other.claimed and other.row.agent_id == "agent-1"
        row = await store.set_agent_status("agent-1", "active", 123, {"pid_create_time": 1.5})
        assert row is not None and row.agent_pid == 123
        assert row.metadata == {"x": 1, "pid_create_time": 1.5}
        batch = [
            MetricsRecord("agent-1", memory_mb=12.5, cpu_percent=3.0),
            MetricsRecord("agent-1", llm_calls=2, locations_marked=1),
            MetricsRecord("agent-1", memory_mb=13.0),
        ]
        assert await store.record_metrics(batch) == 2
        assert [r.agent_id for r in await store.live_agents_of_manager("m1")] == ["agent-1"]
        stats = await store.system_stats()
        assert (stats.active_agents, stats.total_llm_calls, stats.total_locations_marked) == (
            1,
            2,
            1,
        )
        ended = await store.end_agent_life("agent-1", "disconnected", "bye")
        assert ended is not None and ended.status == "disconnected" and ended.error_message == "bye"
        assert await store.end_agent_life("agent-1", "disconnected", "again") is None
        with pytest.raises(StoreError, match="end_agent_life"):
            await store.end_agent_life("agent-1", "active", None)
    finally:
        await store.aclose()
    assert supabase.rpc_calls("record_agent_metrics") == 1  # one call per batch
    assert supabase.select_requests()[:2] == [
        "select=%2A&id=gt.0&order=id.asc&limit=1000",
        "select=%2A&id=gt.1&order=id.asc&limit=10",
    ]


async def test_a_numbered_batch_through_rpc_is_recorded_once(
    supabase: SupabaseDouble, db: psycopg.Connection
) -> None:
    store = await SupabaseStore.connect(supabase.url, SecretStr(supabase.key))
    try:
        await store.claim_document("a", "agent-1", "m1", None)
        batch = [MetricsRecord("agent-1", memory_mb=12.5, locations_marked=4)]
        batch_id = BatchId(uuid.uuid4(), 1)
        assert await store.record_metrics(batch, batch_id) == 1
        assert await store.record_metrics(batch, batch_id) is None
    finally:
        await store.aclose()
    assert supabase.rpc_calls("record_agent_metrics_once") == 2
    assert supabase.unexpected == []
    row = db.execute(
        "SELECT (SELECT count(*) FROM agent_metrics)::int, locations_marked_count"
        " FROM agent_connections WHERE agent_id = 'agent-1'"
    ).fetchone()
    assert row == (1, 4)


async def test_retention_through_rpc(supabase: SupabaseDouble, db: psycopg.Connection) -> None:
    from manager.ops.retention import prune_once

    db.execute(
        'INSERT INTO document_activity (document_id, event_type, "timestamp") VALUES'
        " ('a', 'active', now() - interval '9 days'), ('a', 'idle', now() - interval '8 days')"
    )
    store = await SupabaseStore.connect(supabase.url, SecretStr(supabase.key))
    try:
        assert await prune_once(store, days=7, batch=10, pause_s=0) == (0, 1)
    finally:
        await store.aclose()
    assert db.execute("SELECT event_type FROM document_activity").fetchall() == [("idle",)]
    assert supabase.rpc_calls("prune_history") == 1


async def test_claims_status_changes_and_ends_of_many_lives_through_rpc(database_url: str) -> None:
    ids = [f"agent-{n}" for n in range(12)]
    async with serve_supabase(database_url) as supabase:
        store = await SupabaseStore.connect(supabase.url, SecretStr(supabase.key))
        claims = [(f"doc-{n}", agent_id) for n, agent_id in enumerate(ids)]
        results = await store.claim_documents(claims, "m1", None)
        assert [(r.claimed, r.row.document_id, r.row.agent_id) for r in results] == [
            (True, d, a) for d, a in claims
        ]
        assert supabase.rpc_calls("claim_document") == len(ids)
        await store.end_agent_life("agent-3", "disconnected", "earlier")
        changes = [StatusChange(agent_id, "active", pid=n) for n, agent_id in enumerate(ids)]
        assert await store.set_agent_statuses(changes) == len(ids) - 1  # agent-3 has ended
        assert supabase.rpc_calls("set_agent_status") == len(ids)
        ended = await store.end_agent_lives(ids, "disconnected", "manager restarted")
        assert [row.agent_id for row in ended] == [i for i in ids if i != "agent-3"]
        assert {row.error_message for row in ended} == {"manager restarted"}
        assert await store.live_agents_of_manager("m1") == []
        assert supabase.rpc_calls("end_agent_life") == 1 + len(ids)
        with pytest.raises(ValueError, match="final status"):
            await store.end_agent_lives(ids, "active", None)
        assert supabase.unexpected == []
    try:
        # The project is gone: the first failure comes out as itself, not as a group.
        with pytest.raises(StoreUnavailable):
            await store.end_agent_lives(ids, "disconnected", None)
    finally:
        await store.aclose()
