"""ActivityListener against a real Postgres: order, missed notifications, dropped
connections, inserts still in flight, a Postgres restart, unusable rows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import psycopg
import pytest

from manager.embedded import EmbeddedPostgres
from manager.events.cursor import EventCursor
from manager.events.listen import ActivityListener
from manager.store.base import ActivityEvent
from manager.store.migrations import apply_migrations
from manager.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio


class Collector:
    """on_events for the listener; tests wait for a number of events."""

    def __init__(self) -> None:
        self.events: list[ActivityEvent] = []
        self.batches: list[list[int]] = []
        self._waiters: list[tuple[int, anyio.Event]] = []

    async def __call__(self, batch: Sequence[ActivityEvent]) -> None:
        self.events.extend(batch)
        self.batches.append([e.id for e in batch])
        for count, event in self._waiters:
            if len(self.events) >= count:
                event.set()

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        event = anyio.Event()
        self._waiters.append((count, event))
        if len(self.events) >= count:
            event.set()
        with anyio.fail_after(within):
            await event.wait()

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.events]


def insert(conn: psycopg.Connection, document_id: str, event_type: str = "active") -> int:
    row = conn.execute(
        "INSERT INTO document_activity (document_id, event_type) VALUES (%s, %s) RETURNING id",
        [document_id, event_type],
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.connect(database_url)
    try:
        yield s
    finally:
        await s.aclose()


async def test_catch_up_then_follow_in_id_order(
    database_url: str, store: PostgresStore, db: psycopg.Connection
) -> None:
    before = [insert(db, f"d{i % 3}") for i in range(5)]
    listener = ActivityListener(database_url, store, cursor=before[1], poll_interval_s=30)
    got = Collector()
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run, got)
        assert got.ids == before[2:]  # delivered before started()
        assert listener.connected
        after = [insert(db, f"d{i % 3}", "idle") for i in range(20)]
        await got.wait_for(23)  # woken by NOTIFY: the poll is 30 s away
        assert got.ids == before[2:] + after
        assert listener.cursor == after[-1]
        assert listener.lag_s is not None
        with pytest.raises(RuntimeError):
            await listener.run(got)
        tg.cancel_scope.cancel()


async def test_batches_are_bounded(
    database_url: str, store: PostgresStore, db: psycopg.Connection
) -> None:
    ids = [insert(db, f"d{i}") for i in range(25)]
    listener = ActivityListener(database_url, store, cursor=0, batch=10, poll_interval_s=30)
    got = Collector()
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run, got)
        tg.cancel_scope.cancel()
    assert got.ids == ids
    assert [len(b) for b in got.batches] == [10, 10, 5]


async def test_a_fleet_notification_wakes_the_lease_keeper(
    database_url: str, store: PostgresStore, db: psycopg.Connection
) -> None:
    """``drain_manager()`` notifies ``manager_leases``; the listener passes it on."""
    listener = ActivityListener(database_url, store, cursor=0, poll_interval_s=30)
    woken = anyio.Event()
    listener.on_fleet_notice = woken.set
    got = Collector()
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run, got)
        db.execute("NOTIFY manager_leases, 'm1'")
        with anyio.fail_after(5):
            await woken.wait()
        assert got.events == []  # a wake-up, not an event
        tg.cancel_scope.cancel()


async def test_missed_notification_is_read_by_the_poll(
    database_url: str, store: PostgresStore, db: psycopg.Connection
) -> None:
    listener = ActivityListener(database_url, store, cursor=0, poll_interval_s=0.2)
    got = Collector()
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run, got)
        db.execute("ALTER TABLE document_activity DISABLE TRIGGER document_activity_notify")
        silent = [insert(db, "quiet") for _ in range(3)]
        await got.wait_for(3)
        assert got.ids == silent
        tg.cancel_scope.cancel()


async def test_dropped_connection_loses_nothing(
    database_url: str, store: PostgresStore, db: psycopg.Connection
) -> None:
    listener = ActivityListener(
        database_url, store, cursor=0, poll_interval_s=30, backoff_min_s=0.05
    )
    got = Collector()
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run, got)
        first = insert(db, "a")
        await got.wait_for(1)
        # Block new connections of the listener, cut the one it has, write meanwhile.
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'docagents-activity' AND datname = current_database()"
        )
        during = [insert(db, "a", kind) for kind in ("idle", "active", "user_left")]
        await got.wait_for(4)
        after = insert(db, "b")
        await got.wait_for(5)
        assert got.ids == [first, *during, after]
        assert listener.reconnects >= 1
        tg.cancel_scope.cancel()


async def test_insert_in_flight_is_delivered_when_it_commits(
    database_url: str, store: PostgresStore, db: psycopg.Connection
) -> None:
    listener = ActivityListener(database_url, store, cursor=0, poll_interval_s=30)
    got = Collector()
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run, got)
        with psycopg.connect(database_url) as slow:
            late = insert(slow, "x")  # holds its id, not committed
            early = insert(db, "y")
            await got.wait_for(1)
            assert got.ids == [early]
            assert listener.cursor == 0  # the hole at `late` keeps the cursor down
            slow.commit()
        await got.wait_for(2)
        assert got.ids == [early, late]
        assert listener.cursor == early
        tg.cancel_scope.cancel()


async def test_late_event_of_a_document_already_past_it_is_skipped(
    database_url: str, store: PostgresStore, db: psycopg.Connection
) -> None:
    listener = ActivityListener(database_url, store, cursor=0, poll_interval_s=30)
    got = Collector()
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run, got)
        with psycopg.connect(database_url) as slow:
            insert(slow, "doc", "active")  # older id, commits last
            newer = insert(db, "doc", "idle")
            await got.wait_for(1)
            slow.commit()
        marker = insert(db, "other")
        await got.wait_for(2)
        assert got.ids == [newer, marker]  # 'doc' never goes back to 'active'
        assert listener.cursor == marker
        tg.cancel_scope.cancel()


async def test_unusable_rows_are_skipped_and_the_cursor_moves_on(
    database_url: str, store: PostgresStore, db: psycopg.Connection
) -> None:
    db.execute("ALTER TABLE document_activity DROP CONSTRAINT document_activity_event_type_known")
    listener = ActivityListener(database_url, store, cursor=0, poll_interval_s=30)
    got = Collector()
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run, got)
        insert(db, "a", "exploded")
        good = insert(db, "a", "idle")
        await got.wait_for(1)
        assert got.ids == [good]
        assert listener.cursor == good
        tg.cancel_scope.cancel()


def test_cursor_skips_an_expired_hole() -> None:
    def ev(i: int, doc: str = "d") -> ActivityEvent:
        from datetime import UTC, datetime

        return ActivityEvent(i, doc, "active", 1, datetime.now(UTC))

    cur = EventCursor(0, gap_timeout_s=10)
    fresh = cur.accept([ev(1), ev(3, "e")], [1, 3], now=100.0)
    cur.delivered(fresh, now=100.0)
    assert (cur.cursor, cur.holes) == (1, [2])
    cur.advance(now=105.0)
    assert cur.cursor == 1
    cur.advance(now=1e12)
    assert (cur.cursor, cur.holes) == (3, [])
    # A row not delivered (the consumer failed) comes again on the next read.
    assert [e.id for e in cur.accept([ev(4)], [4], now=0)] == [4]
    assert [e.id for e in cur.accept([ev(4)], [4], now=0)] == [4]


@pytest.mark.slow
async def test_postgres_restart_mid_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = EmbeddedPostgres(home)
    url = server.start()
    try:
        await apply_migrations(url)
        store = await PostgresStore.connect(url)
        listener = ActivityListener(
            url, store, cursor=0, poll_interval_s=0.5, backoff_min_s=0.1, backoff_max_s=0.5
        )
        got = Collector()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(listener.run, got)
                with psycopg.connect(url, autocommit=True) as conn:
                    before = [insert(conn, f"d{i % 2}") for i in range(3)]
                await got.wait_for(3)

                # The last holder letting go stops the server (a fast shutdown).
                await anyio.to_thread.run_sync(server.release)
                assert not server.stop_now()  # already down
                server = EmbeddedPostgres(home)
                url2 = await anyio.to_thread.run_sync(server.start)
                assert url2 == url

                with psycopg.connect(url, autocommit=True) as conn:
                    after = [insert(conn, f"d{i % 2}", "idle") for i in range(5)]
                await got.wait_for(8, within=30)
                assert got.ids == before + after  # in order, exactly once
                assert listener.reconnects >= 1
                tg.cancel_scope.cancel()
        finally:
            await store.aclose()
    finally:
        server.stop_now()
        server.release()
