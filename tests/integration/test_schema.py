"""The schema's rules, enforced by the database itself."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import errors

from tests.integration.lease_support import hold_lease


@pytest.fixture(autouse=True)
def _leases(database_url: str) -> None:
    """claim_document needs a valid lease."""
    hold_lease(database_url, "m")
    hold_lease(database_url, "manager-0")
    hold_lease(database_url, "manager-1")
    hold_lease(database_url, "manager-2")
    hold_lease(database_url, "manager-3")
    hold_lease(database_url, "manager-4")
    hold_lease(database_url, "manager-5")
    hold_lease(database_url, "manager-6")
    hold_lease(database_url, "manager-7")


def test_unknown_event_type_is_rejected(db: psycopg.Connection) -> None:
    with pytest.raises(errors.CheckViolation, match="document_activity_event_type_known"):
        db.execute(
            "INSERT INTO document_activity (document_id, event_type) VALUES ('d', 'exploded')"
        )


@pytest.mark.parametrize("length", [0, 513, 4096])
def test_bad_document_id_length_is_rejected(db: psycopg.Connection, length: int) -> None:
    with pytest.raises(errors.CheckViolation, match="document_activity_document_id_length"):
        db.execute(
            "INSERT INTO document_activity (document_id, event_type) VALUES (%s, 'active')",
            ["x" * length],
        )


def test_document_ids_up_to_512_characters_are_accepted(db: psycopg.Connection) -> None:
    for doc_id in ("a", "é" * 512, "x" * 512, "team/space:doc 1"):
        db.execute(
            "INSERT INTO document_activity (document_id, event_type) VALUES (%s, 'active')",
            [doc_id],
        )
    assert db.execute("SELECT count(*) FROM document_activity").fetchone() == (4,)


def test_insert_notifies_with_row_id(database_url: str, db: psycopg.Connection) -> None:
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN document_activity")
        row = db.execute(
            "INSERT INTO document_activity (document_id, event_type, user_count) "
            "VALUES ('doc-1', 'active', 1) RETURNING id"
        ).fetchone()
        assert row is not None
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in notes] == [("document_activity", str(row[0]))]


def test_second_live_row_for_a_document_is_rejected(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO agent_connections (document_id, agent_id, manager_id, status) "
        "VALUES ('d', 'a1', 'm', 'active')"
    )
    with pytest.raises(errors.UniqueViolation, match="agent_connections_one_live_per_document"):
        db.execute(
            "INSERT INTO agent_connections (document_id, agent_id, manager_id, status) "
            "VALUES ('d', 'a2', 'm', 'connecting')"
        )
    # Ended lives do not count.
    db.execute("SELECT end_agent_life('a1', 'disconnected', 'test')")
    db.execute(
        "INSERT INTO agent_connections (document_id, agent_id, manager_id, status) "
        "VALUES ('d', 'a3', 'm', 'connecting')"
    )


def test_concurrent_claims_produce_exactly_one_live_row(database_url: str) -> None:
    n = 8
    barrier = threading.Barrier(n)
    results: list[tuple[bool, str]] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            barrier.wait()
            row = conn.execute(
                "SELECT claimed, (connection).agent_id FROM claim_document(%s, %s, %s, 'host')",
                ["contested", f"agent-{i}", f"manager-{i}"],
            ).fetchone()
            assert row is not None
            with lock:
                results.append((row[0], row[1]))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [agent for claimed, agent in results if claimed]
    assert len(results) == n
    assert len(winners) == 1
    # Every loser was told who the owner is.
    assert {agent for _, agent in results} == {winners[0]}
    with psycopg.connect(database_url) as conn:
        live = conn.execute(
            "SELECT count(*) FROM agent_connections WHERE status IN ('connecting', 'active')"
        ).fetchone()
    assert live == (1,)


def test_end_agent_life_is_idempotent_and_keeps_first_reason(db: psycopg.Connection) -> None:
    db.execute("SELECT * FROM claim_document('d', 'a1', 'm')")
    first = db.execute(
        "SELECT status, error_message FROM end_agent_life('a1', 'error', 'crash loop')"
    ).fetchall()
    again = db.execute("SELECT * FROM end_agent_life('a1', 'disconnected', 'later')").fetchall()
    assert first == [("error", "crash loop")]
    assert again == []
    row = db.execute(
        "SELECT status, error_message, disconnected_at IS NOT NULL FROM agent_connections"
    ).fetchone()
    assert row == ("error", "crash loop", True)
    with pytest.raises(errors.CheckViolation):
        db.execute("SELECT * FROM end_agent_life('a1', 'active', 'nope')")


def test_record_agent_metrics_batch(db: psycopg.Connection) -> None:
    cid = db.execute("SELECT (connection).id FROM claim_document('d', 'a1', 'm')").fetchone()
    assert cid is not None
    inserted = db.execute(
        "SELECT record_agent_metrics(%s::jsonb)",
        [
            '[{"agent_id": "a1", "memory_mb": 20.5, "cpu_percent": 1234.5,'
            '  "websocket_latency_ms": 3.2, "recorded_at": "2026-01-01T00:00:00Z"},'
            ' {"agent_id": "a1", "memory_mb": 21.5, "cpu_percent": 2.0,'
            '  "recorded_at": "2026-01-01T00:00:30Z"},'
            ' {"agent_id": "a1", "llm_calls": 3, "locations_marked": 2},'
            ' {"agent_id": "unknown", "memory_mb": 1}]'
        ],
    ).fetchone()
    assert inserted == (2,)
    rows = db.execute(
        "SELECT agent_connection_id, memory_mb, cpu_percent FROM agent_metrics ORDER BY recorded_at"
    ).fetchall()
    assert [(r[0], float(r[1]), float(r[2])) for r in rows] == [
        (cid[0], 20.5, 1234.5),
        (cid[0], 21.5, 2.0),
    ]
    snap = db.execute(
        "SELECT memory_mb, cpu_percent, llm_calls_count, locations_marked_count "
        "FROM agent_connections WHERE agent_id = 'a1'"
    ).fetchone()
    assert snap is not None
    assert (float(snap[0]), float(snap[1]), snap[2], snap[3]) == (21.5, 2.0, 3, 2)


def test_increment_agent_metric(db: psycopg.Connection) -> None:
    db.execute("SELECT * FROM claim_document('d', 'a1', 'm')")
    db.execute("SELECT increment_agent_metric('a1', 'llm_calls_count')")
    db.execute("SELECT increment_agent_metric('a1', 'locations_marked_count')")
    db.execute("SELECT increment_agent_metric('a1', 'locations_marked_count')")
    row = db.execute(
        "SELECT llm_calls_count, locations_marked_count FROM agent_connections"
    ).fetchone()
    assert row == (1, 2)
    with pytest.raises(errors.InvalidParameterValue):
        db.execute("SELECT increment_agent_metric('a1', 'bogus')")


def test_system_stats_on_seeded_table(db: psycopg.Connection) -> None:
    db.execute(
        """
        INSERT INTO agent_connections
            (document_id, agent_id, manager_id, status, memory_mb, llm_calls_count,
             locations_marked_count)
        VALUES ('d1', 'a1', 'm1', 'active', 40, 5, 3),
               ('d2', 'a2', 'm1', 'active', 20, 1, 1),
               ('d3', 'a3', 'm2', 'connecting', NULL, 0, 0),
               ('d1', 'a0', 'm1', 'disconnected', 90, 10, 7),
               ('d4', 'a4', 'm2', 'error', 10, 2, 0)
        """
    )
    row = db.execute("SELECT * FROM get_agent_system_stats()").fetchone()
    assert row is not None
    # The kept columns first, in their order; the columns of 0009 after them.
    total, active, connecting, avg_mem, llm, marked, docs = row[:7]
    assert (total, active, connecting, docs) == (3, 2, 1, 3)
    assert float(avg_mem) == 30.0
    assert (llm, marked) == (18, 11)
    avg_rss, live_llm, live_marked = row[7:]
    assert float(avg_rss) == 30.0
    assert (live_llm, live_marked) == (6, 4)
    mine = db.execute("SELECT agent_id FROM get_manager_active_agents('m1') ORDER BY 1").fetchall()
    assert mine == [("a1",), ("a2",)]


def test_system_stats_average_pss_where_reported(db: psycopg.Connection) -> None:
    """avg_memory_mb is the live agents' PSS (RSS only for a row that has no PSS)."""
    db.execute(
        """
        INSERT INTO agent_connections (document_id, agent_id, manager_id, status, memory_mb)
        VALUES ('d1', 'a1', 'm1', 'active', 40), ('d2', 'a2', 'm1', 'active', 40),
               ('d3', 'a3', 'm1', 'active', 20)
        """
    )
    db.execute(
        'SELECT record_agent_metrics(\'[{"agent_id":"a1","memory_mb":40,"pss_mb":10,'
        '"uss_mb":8},{"agent_id":"a2","memory_mb":40,"pss_mb":12}]\'::jsonb)'
    )
    stats = db.execute("SELECT avg_memory_mb, avg_rss_mb FROM get_agent_system_stats()").fetchone()
    assert stats is not None
    assert (float(stats[0]), float(stats[1])) == (14.0, 33.33)
    sample = db.execute(
        "SELECT m.memory_mb, m.pss_mb, m.uss_mb FROM agent_metrics m JOIN agent_connections c"
        " ON c.id = m.agent_connection_id WHERE c.agent_id = 'a1'"
    ).fetchone()
    assert sample is not None and [float(v) for v in sample] == [40.0, 10.0, 8.0]
    live = db.execute("SELECT pss_mb, uss_mb FROM live_agents WHERE agent_id = 'a1'").fetchone()
    assert live is not None and [float(v) for v in live] == [10.0, 8.0]


def test_cpu_percent_holds_real_values(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO agent_connections (document_id, agent_id, manager_id, cpu_percent, memory_mb)"
        " VALUES ('d', 'a', 'm', 4800.25, 65536)"
    )
