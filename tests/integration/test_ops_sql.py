"""Ops SQL: inspection views and retention (migrations/0004_ops.sql)."""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.lease_support import hold_lease


@pytest.fixture(autouse=True)
def _leases(database_url: str) -> None:
    """claim_document needs a valid lease."""
    hold_lease(database_url, "m1")


def _seed_agent(db: psycopg.Connection, doc: str, agent: str) -> str:
    row = db.execute(
        "SELECT (connection).id FROM claim_document(%s, %s, 'm1', 'host')", [doc, agent]
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_live_agents_shows_latest_metrics(db: psycopg.Connection) -> None:
    _seed_agent(db, "d1", "a1")
    db.execute("SELECT * FROM set_agent_status('a1', 'active', 4242)")
    db.execute(
        "SELECT record_agent_metrics(%s::jsonb)",
        [
            '[{"agent_id":"a1","memory_mb":20,"websocket_latency_ms":9,'
            '"recorded_at":"2026-01-01T00:00:00Z"},'
            '{"agent_id":"a1","memory_mb":22,"websocket_latency_ms":3,'
            '"recorded_at":"2026-01-01T00:00:30Z"}]'
        ],
    )
    _seed_agent(db, "d2", "a2")
    db.execute("SELECT * FROM end_agent_life('a2', 'disconnected', 'idle')")
    rows = db.execute(
        "SELECT document_id, status, agent_pid, memory_mb, last_websocket_latency_ms "
        "FROM live_agents"
    ).fetchall()
    assert [(r[0], r[1], r[2], float(r[3]), float(r[4])) for r in rows] == [
        ("d1", "active", 4242, 22.0, 3.0)
    ]


def test_usage_and_lifetimes_views(db: psycopg.Connection) -> None:
    _seed_agent(db, "d1", "a1")
    db.execute(
        'SELECT record_agent_metrics(\'[{"agent_id":"a1","llm_calls":4,'
        '"locations_marked":2,"memory_mb":30}]\'::jsonb)'
    )
    db.execute("SELECT * FROM end_agent_life('a1', 'error', 'crash loop: 5 restarts in 300 s')")
    _seed_agent(db, "d1", "a2")
    usage = db.execute(
        "SELECT document_id, agent_lives, llm_calls, locations_marked, avg_memory_mb "
        "FROM document_usage_hourly"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[3], float(r[4])) for r in usage] == [("d1", 2, 4, 2, 30.0)]
    reasons = dict(db.execute("SELECT end_reason, lives FROM agent_end_reasons").fetchall())
    assert reasons == {"crash loop: 5 restarts in 300 s": 1}
    lifetimes = db.execute(
        "SELECT agent_id, end_reason FROM agent_lifetimes ORDER BY agent_id"
    ).fetchall()
    assert lifetimes == [("a1", "crash loop: 5 restarts in 300 s"), ("a2", None)]


def test_prune_history_batches_and_keeps_latest_event(db: psycopg.Connection) -> None:
    cid = _seed_agent(db, "d1", "a1")
    # 7 old metrics samples, 1 recent one.
    db.execute(
        "INSERT INTO agent_metrics (agent_connection_id, document_id, memory_mb, recorded_at) "
        "SELECT %s, 'd1', 1, now() - interval '40 days' - g * interval '1 minute' "
        "FROM generate_series(1, 7) g",
        [cid],
    )
    db.execute(
        "INSERT INTO agent_metrics (agent_connection_id, document_id, memory_mb) "
        "VALUES (%s, 'd1', 2)",
        [cid],
    )
    # d-old: only old events (its latest must survive); d-new: old + recent.
    db.execute(
        'INSERT INTO document_activity (document_id, event_type, "timestamp") VALUES '
        "('d-old', 'active', now() - interval '50 days'),"
        "('d-old', 'idle', now() - interval '49 days'),"
        "('d-old', 'active', now() - interval '48 days'),"
        "('d-new', 'active', now() - interval '45 days'),"
        "('d-new', 'idle', now() - interval '1 day')"
    )
    first = db.execute("SELECT * FROM prune_history(interval '30 days', 4)").fetchone()
    assert first == (4, 3)
    second = db.execute("SELECT * FROM prune_history(interval '30 days', 4)").fetchone()
    assert second == (3, 0)
    assert db.execute("SELECT * FROM prune_history(interval '30 days', 4)").fetchone() == (0, 0)
    assert db.execute("SELECT count(*) FROM agent_metrics").fetchone() == (1,)
    left = db.execute(
        "SELECT document_id, event_type FROM document_activity ORDER BY id"
    ).fetchall()
    assert left == [("d-old", "active"), ("d-new", "idle")]
