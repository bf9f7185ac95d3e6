"""PostgresStore: every method against a real database."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
import psycopg
import pytest

from manager.errors import ConfigurationError, StoreError, StoreUnavailable
from manager.store.base import BatchId, MetricsRecord, StatusChange, Supersede
from manager.store.postgres import PostgresStore
from tests.integration.lease_support import hold_lease

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _leases(database_url: str) -> None:
    """claim_document needs a valid lease."""
    hold_lease(database_url, "m1")
    hold_lease(database_url, "m2")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.connect(database_url)
    try:
        yield s
    finally:
        await s.aclose()


def insert_event(db: psycopg.Connection, document_id: str, event_type: str) -> int:
    row = db.execute(
        "INSERT INTO document_activity (document_id, event_type) VALUES (%s, %s) RETURNING id",
        [document_id, event_type],
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_latest_events_and_cursor(store: PostgresStore, db: psycopg.Connection) -> None:
    assert await store.latest_events() == ([], 0)
    insert_event(db, "a", "active")
    insert_event(db, "b", "active")
    insert_event(db, "a", "idle")
    last = insert_event(db, "c", "user_joined")
    events, cursor = await store.latest_events()
    assert cursor == last
    assert [(e.document_id, e.event_type) for e in events] == [
        ("b", "active"),
        ("a", "idle"),
        ("c", "user_joined"),
    ]
    assert all(e.timestamp.tzinfo is not None for e in events)


async def test_latest_events_stops_below_an_insert_in_flight(
    store: PostgresStore, db: psycopg.Connection, database_url: str
) -> None:
    first = insert_event(db, "a", "active")
    with psycopg.connect(database_url) as slow:  # a transaction: not committed yet
        in_flight = insert_event(slow, "b", "active")
        later = insert_event(db, "c", "active")
        events, cursor = await store.latest_events()
        assert cursor == first  # following from here delivers b and c, in order
        assert [e.id for e in events] == [first]
        slow.commit()
    assert [e.id for e in (await store.read_events(cursor)).events] == [in_flight, later]


async def test_read_events_pages_in_id_order(store: PostgresStore, db: psycopg.Connection) -> None:
    ids = [insert_event(db, f"d{i}", "active") for i in range(5)]
    assert [e.id for e in (await store.read_events(0)).events] == ids
    assert [e.id for e in (await store.read_events(ids[1], limit=2)).events] == ids[2:4]
    assert (await store.read_events(ids[-1])).events == []


async def test_unusable_rows_are_logged_and_skipped(
    store: PostgresStore, db: psycopg.Connection
) -> None:
    db.execute("ALTER TABLE document_activity DROP CONSTRAINT document_activity_event_type_known")
    good = insert_event(db, "a", "active")
    bad = insert_event(db, "a", "exploded")
    blank = insert_event(db, "   ", "active")
    page = await store.read_events(0)
    assert [e.id for e in page.events] == [good]
    assert page.ids == [good, bad, blank]
    events, _ = await store.latest_events()
    assert events == []  # the latest row of 'a' is unusable; nothing else to say


async def test_claim_status_end_and_agents_of_manager(store: PostgresStore) -> None:
    claim = await store.claim_document("doc", "agent-1", "m1", "host1", {"k": 1})
    assert claim.claimed
    assert claim.row.status == "connecting"
    assert claim.row.metadata == {"k": 1}
    assert claim.row.manager_host == "host1"

    other = await store.claim_document("doc", "agent-2", "m2", None)
    assert not other.claimed
    assert other.row.agent_id == "agent-1"

    row = await store.set_agent_status(
        "agent-1", "active", pid=4242, metadata={"pid_create_time": 1.5}
    )
    assert row is not None
    assert (row.status, row.agent_pid) == ("active", 4242)
    assert row.metadata == {"k": 1, "pid_create_time": 1.5}
    row = await store.set_agent_status("agent-1", "detaching")
    assert row is not None
    assert (row.agent_pid, row.metadata["pid_create_time"]) == (4242, 1.5)

    live = await store.live_agents_of_manager("m1")
    assert [r.agent_id for r in live] == ["agent-1"]
    assert await store.live_agents_of_manager("m2") == []

    ended = await store.end_agent_life("agent-1", "error", "boom")
    assert ended is not None
    assert (ended.status, ended.error_message) == ("error", "boom")
    assert ended.disconnected_at is not None
    assert await store.end_agent_life("agent-1", "disconnected", "again") is None
    assert await store.set_agent_status("agent-1", "active") is None
    assert await store.live_agents_of_manager("m1") == []
    assert (await store.claim_document("doc", "agent-3", "m2", None)).claimed

    with pytest.raises(ValueError, match="final status"):
        await store.end_agent_life("agent-3", "active", None)
    with pytest.raises(StoreError):
        await store.set_agent_status("agent-3", "no-such-status")


async def test_record_metrics_one_call_and_stats(
    store: PostgresStore, db: psycopg.Connection
) -> None:
    claim = await store.claim_document("doc", "agent-1", "m1", None)
    await store.set_agent_status("agent-1", "active")
    now = datetime.now(UTC)
    inserted = await store.record_metrics(
        [
            MetricsRecord("agent-1", memory_mb=20.5, cpu_percent=3.0, recorded_at=now),
            MetricsRecord("agent-1", websocket_latency_ms=4.0, llm_response_time_ms=300.0),
            MetricsRecord("agent-1", llm_calls=2, locations_marked=3, last_activity_at=now),
            MetricsRecord("nobody", memory_mb=1.0),
        ]
    )
    assert inserted == 2
    assert await store.record_metrics([]) == 0
    rows = db.execute("SELECT agent_connection_id FROM agent_metrics ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [claim.row.id, claim.row.id]
    stats = await store.system_stats()
    assert (stats.total_agents, stats.active_agents, stats.connecting_agents) == (1, 1, 0)
    assert (stats.total_llm_calls, stats.total_locations_marked) == (2, 3)
    assert stats.avg_memory_mb == 20.5
    assert stats.unique_documents == 1


async def test_a_numbered_batch_is_recorded_once(
    store: PostgresStore, db: psycopg.Connection
) -> None:
    await store.claim_document("doc", "agent-1", "m1", None)
    batch = [
        MetricsRecord("agent-1", memory_mb=20.0),
        MetricsRecord("agent-1", llm_calls=2, locations_marked=3),
    ]
    writer, other = uuid.uuid4(), uuid.uuid4()

    def totals() -> tuple[int, int, int] | None:
        return db.execute(
            "SELECT (SELECT count(*) FROM agent_metrics)::int, llm_calls_count,"
            " locations_marked_count FROM agent_connections WHERE agent_id = 'agent-1'"
        ).fetchone()

    assert await store.record_metrics(batch, BatchId(writer, 1)) == 1
    assert await store.record_metrics(batch, BatchId(writer, 1)) is None  # the repeat
    assert totals() == (1, 2, 3)
    assert await store.record_metrics(batch, BatchId(writer, 2)) == 1
    assert await store.record_metrics(batch, BatchId(writer, 1)) is None  # older: recorded
    assert await store.record_metrics(batch, BatchId(other, 1)) == 1  # another writer
    assert totals() == (3, 6, 9)
    assert db.execute("SELECT count(*) FROM metrics_writers").fetchone() == (2,)
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="writer id"):
        db.execute("SELECT record_agent_metrics_once(NULL, 1, '[]'::jsonb)")


async def test_concurrent_repeats_of_one_batch_count_once(
    database_url: str, db: psycopg.Connection
) -> None:
    stores = [await PostgresStore.connect(database_url) for _ in range(4)]
    try:
        await stores[0].claim_document("doc", "agent-1", "m1", None)
        batch = [MetricsRecord("agent-1", llm_calls=1)]
        batch_id = BatchId(uuid.uuid4(), 7)
        results: list[int | None] = []

        async def send(store: PostgresStore) -> None:
            results.append(await store.record_metrics(batch, batch_id))

        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(send, store)
    finally:
        for store in stores:
            await store.aclose()
    assert sorted(results, key=lambda r: r is None) == [0, None, None, None]
    assert db.execute("SELECT llm_calls_count FROM agent_connections").fetchone() == (1,)


async def test_two_managers_claim_concurrently_one_live_row(
    database_url: str, db: psycopg.Connection
) -> None:
    a = await PostgresStore.connect(database_url)
    b = await PostgresStore.connect(database_url)
    results = []
    try:
        for round_ in range(20):
            doc = f"doc-{round_}"

            async def claim(store: PostgresStore, name: str, doc: str = doc) -> None:
                results.append(await store.claim_document(doc, f"{name}-{doc}", name, None))

            async with anyio.create_task_group() as tg:
                tg.start_soon(claim, a, "m1")
                tg.start_soon(claim, b, "m2")
    finally:
        await a.aclose()
        await b.aclose()
    assert sum(r.claimed for r in results) == 20
    live = db.execute(
        "SELECT document_id, count(*) FROM agent_connections "
        "WHERE status IN ('connecting', 'active') GROUP BY 1"
    ).fetchall()
    assert len(live) == 20
    assert all(count == 1 for _, count in live)


async def test_unreachable_database_raises_store_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conninfo = f"host=127.0.0.1 port={port} user=u password=s3cret dbname=d"
    with pytest.raises(StoreUnavailable) as info:
        await PostgresStore.connect(conninfo, open_timeout_s=1)
    assert "s3cret" not in str(info.value)


async def test_a_missing_database_is_a_configuration_error(pg_admin_url: str) -> None:
    from tests.conftest import with_dbname

    with pytest.raises(ConfigurationError, match="no_such_db"):
        await PostgresStore.connect(with_dbname(pg_admin_url, "no_such_db"), open_timeout_s=1)


async def test_connection_killed_then_next_call_reconnects(
    store: PostgresStore, db: psycopg.Connection
) -> None:
    await store.system_stats()
    # Wait until the backends are gone (a server that went away has said so on the
    # socket; racing a backend still exiting is one failed call, like any outage).
    db.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    stats = await store.system_stats()  # the pool's check drops the dead connection
    assert stats.total_agents == 0


async def test_end_agent_lives_ends_many_and_skips_the_ended(store: PostgresStore) -> None:
    for n in range(3):
        assert (await store.claim_document(f"doc-{n}", f"agent-{n}", "m1", None)).claimed
    assert await store.end_agent_life("agent-1", "disconnected", "earlier") is not None

    ended = await store.end_agent_lives(
        ["agent-2", "agent-1", "agent-0", "nobody"], "disconnected", "manager restarted"
    )
    assert [row.agent_id for row in ended] == ["agent-2", "agent-0"]  # asked order, ended only
    assert all(row.status == "disconnected" for row in ended)
    assert all(row.error_message == "manager restarted" for row in ended)
    assert all(row.disconnected_at is not None for row in ended)
    assert await store.live_agents_of_manager("m1") == []
    assert await store.end_agent_lives([], "disconnected", None) == []
    with pytest.raises(ValueError, match="final status"):
        await store.end_agent_lives(["agent-0"], "active", None)


async def test_set_agent_statuses_in_order_in_one_transaction(
    store: PostgresStore, db: psycopg.Connection
) -> None:
    for n in range(3):
        assert (await store.claim_document(f"doc-{n}", f"agent-{n}", "m1", None)).claimed
    await store.end_agent_life("agent-2", "disconnected", "gone")
    changed = await store.set_agent_statuses(
        [
            StatusChange("agent-0", "active", pid=100, metadata={"pid_create_time": 1.5}),
            StatusChange("agent-1", "active", pid=101),
            StatusChange("agent-0", "detaching"),  # after its own change above
            StatusChange("agent-2", "active", pid=102),  # ended: left alone
        ]
    )
    assert changed == 3
    rows = db.execute(
        "SELECT agent_id, status, agent_pid, metadata FROM agent_connections ORDER BY agent_id"
    ).fetchall()
    assert rows == [
        ("agent-0", "detaching", 100, {"pid_create_time": 1.5}),
        ("agent-1", "active", 101, {}),
        ("agent-2", "disconnected", None, {}),
    ]
    assert await store.set_agent_statuses([]) == 0
    # One refused change refuses the whole call: nothing of it is written.
    with pytest.raises(StoreError):
        await store.set_agent_statuses(
            [StatusChange("agent-1", "detaching"), StatusChange("agent-0", "no-such-status")]
        )
    row = db.execute("SELECT status FROM agent_connections WHERE agent_id = 'agent-1'").fetchone()
    assert row == ("active",)


async def test_claim_documents_answers_in_the_asked_order(store: PostgresStore) -> None:
    assert (await store.claim_document("b", "old-b", "m2", None)).claimed
    results = await store.claim_documents(
        [("c", "agent-c"), ("b", "agent-b"), ("a", "agent-a")], "m1", "host-1", {"k": 1}
    )
    assert [(r.claimed, r.row.document_id, r.row.agent_id) for r in results] == [
        (True, "c", "agent-c"),
        (False, "b", "old-b"),  # the live owner, as claim_document answers
        (True, "a", "agent-a"),
    ]
    assert results[0].row.manager_id == "m1" and results[0].row.metadata == {"k": 1}
    assert await store.claim_documents([], "m1", None) == []


async def test_two_managers_claim_overlapping_batches_without_deadlock(
    database_url: str, db: psycopg.Connection
) -> None:
    """Each batch is one transaction holding its new rows: taken in document order,
    two batches asking for the same documents in opposite orders cannot deadlock."""
    a = await PostgresStore.connect(database_url)
    b = await PostgresStore.connect(database_url)
    docs = [f"doc-{n:02d}" for n in range(40)]
    answers: dict[str, list[bool]] = {}
    try:
        for round_ in range(5):
            batch = [f"{d}-{round_}" for d in docs]

            async def claim(store: PostgresStore, name: str, order: list[str]) -> None:
                results = await store.claim_documents(
                    [(d, f"{name}-{d}") for d in order], name, None
                )
                for doc, result in zip(order, results, strict=True):
                    assert result.row.document_id == doc
                    answers.setdefault(doc, []).append(result.claimed)

            async with anyio.create_task_group() as tg:
                tg.start_soon(claim, a, "m1", batch)
                tg.start_soon(claim, b, "m2", batch[::-1])
    finally:
        await a.aclose()
        await b.aclose()
    assert len(answers) == 200
    assert all(sorted(claimed) == [False, True] for claimed in answers.values())
    live = db.execute(
        "SELECT count(*), count(DISTINCT document_id) FROM agent_connections"
        " WHERE status IN ('connecting', 'active')"
    ).fetchone()
    assert live == (200, 200)


# --- issue 14: claims through an agent life's edges ----------------------------------


async def test_a_claim_retried_after_a_lost_answer_gets_its_own_row(
    store: PostgresStore,
) -> None:
    first = await store.claim_document("doc", "agent-1", "m1", "h")
    assert first.claimed
    # The answer was lost; the manager asks again for the same life.
    again = await store.claim_document("doc", "agent-1", "m1", "h")
    assert again.claimed and again.row.id == first.row.id
    batch = await store.claim_documents([("doc", "agent-1")], "m1", "h")
    assert batch[0].claimed and batch[0].row.id == first.row.id
    # Another life of the same manager is refused while agent-1 lives.
    other = await store.claim_document("doc", "agent-2", "m1", "h")
    assert not other.claimed and other.row.agent_id == "agent-1"
    # An ended life asked again is not revived.
    await store.end_agent_life("agent-1", "disconnected", "idle")
    ended = await store.claim_document("doc", "agent-1", "m1", "h")
    assert not ended.claimed and ended.row.status == "disconnected"


async def test_a_detaching_life_blocks_other_managers(store: PostgresStore) -> None:
    """Issue 14 #8: 'detaching' is still a live agent in its document."""
    assert (await store.claim_document("doc", "agent-1", "m1", "h")).claimed
    await store.set_agent_status("agent-1", "detaching")
    refused = await store.claim_document("doc", "agent-2", "m2", "h")
    assert not refused.claimed and refused.row.agent_id == "agent-1"
    await store.end_agent_life("agent-1", "disconnected", "idle")
    assert (await store.claim_document("doc", "agent-2", "m2", "h")).claimed


async def test_a_claim_supersedes_only_this_managers_previous_life(
    store: PostgresStore, db: psycopg.Connection
) -> None:
    assert (await store.claim_document("doc", "agent-1", "m1", "h")).claimed
    await store.set_agent_status("agent-1", "detaching")
    previous = Supersede("agent-1", "disconnected", "idle")
    # Another manager cannot end m1's row by naming it.
    refused = await store.claim_document("doc", "agent-x", "m2", "h", supersedes=previous)
    assert not refused.claimed
    result = await store.claim_documents(
        [("doc", "agent-2")], "m1", "h", supersedes={"agent-2": previous}
    )
    assert result[0].claimed
    rows = db.execute(
        "SELECT agent_id, status, error_message FROM agent_connections ORDER BY connected_at"
    ).fetchall()
    assert rows == [("agent-1", "disconnected", "idle"), ("agent-2", "connecting", None)]
    # The writer's late end of agent-1 changes nothing: the first end stands.
    assert await store.end_agent_life("agent-1", "disconnected", "idle") is None


async def test_end_reasons_are_codes_in_the_ops_views(
    store: PostgresStore, db: psycopg.Connection
) -> None:
    for n, reason in enumerate(["idle", "crashed: exited with code 1", "idle", "evicted"]):
        agent = f"agent-{n}"
        assert (await store.claim_document(f"doc-{n}", agent, "m1", "h")).claimed
        await store.end_agent_life(agent, "disconnected", reason)
    counts = dict(db.execute("SELECT end_reason, lives FROM agent_end_reasons").fetchall())
    assert counts == {"idle": 2, "crashed": 1, "evicted": 1}
    detail = db.execute(
        "SELECT end_detail FROM agent_lifetimes WHERE end_reason = 'crashed'"
    ).fetchone()
    assert detail == ("crashed: exited with code 1",)
