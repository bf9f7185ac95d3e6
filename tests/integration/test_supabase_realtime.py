"""RealtimeActivitySource against the Phoenix/PostgREST double, data in a real Postgres.

The double's change events come from the real table (NOTIFY -> row -> frame).
Delivery is asserted by id cursor: withheld changes and a dropped websocket
lose nothing, duplicate nothing, reorder nothing.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Sequence

import anyio
import psycopg
import pytest
from pydantic import SecretStr

from manager.errors import ConfigurationError
from manager.events.realtime import RealtimeActivitySource
from manager.store.base import ActivityEvent
from manager.store.supabase import SupabaseStore
from tests.integration.supabase_doubles import SupabaseDouble, serve_supabase

pytestmark = [
    pytest.mark.anyio,
    # realtime 2.34 reads ConnectionClosed.code (deprecated since websockets 13.1)
    # in its reader task when a socket closes; as an error it would kill that task.
    pytest.mark.filterwarnings("ignore:ConnectionClosed.code is deprecated:DeprecationWarning"),
]


class Collector:
    def __init__(self) -> None:
        self.events: list[ActivityEvent] = []
        self._changed = anyio.Event()

    async def __call__(self, events: Sequence[ActivityEvent]) -> None:
        self.events.extend(events)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, count: int) -> None:
        while len(self.events) < count:
            await self._changed.wait()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def insert(db: psycopg.Connection, *rows: tuple[str, str]) -> list[int]:
    ids = []
    for document_id, event_type in rows:
        cur = db.execute(
            "INSERT INTO document_activity (document_id, event_type, user_count) "
            "VALUES (%s, %s, 1) RETURNING id",
            (document_id, event_type),
        )
        row = cur.fetchone()
        assert row is not None
        ids.append(row[0])
    return ids


@pytest.fixture
async def supabase(database_url: str) -> AsyncIterator[SupabaseDouble]:
    async with serve_supabase(database_url) as double:
        yield double
        assert double.unexpected == []


@pytest.fixture
async def store(supabase: SupabaseDouble) -> AsyncIterator[SupabaseStore]:
    store = await SupabaseStore.connect(supabase.url, SecretStr(supabase.key))
    try:
        yield store
    finally:
        await store.aclose()


async def test_subscribes_with_the_real_frames_and_wakes_on_changes(
    supabase: SupabaseDouble, store: SupabaseStore, db: psycopg.Connection
) -> None:
    insert(db, ("old", "active"))
    latest, cursor = await store.latest_events()
    assert [e.document_id for e in latest] == ["old"]
    # a poll interval far beyond the test's deadline: only the change frames can wake it
    source = RealtimeActivitySource(
        supabase.url,
        SecretStr(supabase.key),
        store,
        cursor=cursor,
        poll_interval_s=120,
        settle_s=60,
    )
    got = Collector()
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(source.run, got)
        assert source.connected
        assert supabase.websocket_urls == [
            f"/realtime/v1/websocket?apikey={supabase.key}&vsn=1.0.0"
        ]
        join = supabase.joins[0]
        assert join["topic"] == "realtime:docagents-activity"
        assert join["payload"]["access_token"] == supabase.key
        assert join["payload"]["config"]["postgres_changes"] == [
            {"event": "INSERT", "schema": "public", "table": "document_activity"}
        ]
        assert supabase.heartbeats >= 1  # sent on connect, then every 25 s
        ids = insert(db, ("a", "active"), ("b", "active"), ("a", "idle"))
        with anyio.fail_after(10):
            await got.wait_for(3)
        assert [e.id for e in got.events] == ids
        assert [(e.document_id, e.event_type) for e in got.events] == [
            ("a", "active"),
            ("b", "active"),
            ("a", "idle"),
        ]
        assert supabase.sent_changes == ids
        assert source.cursor == ids[-1]
        assert source.lag_s is not None
        tg.cancel_scope.cancel()


async def test_dropped_socket_and_withheld_changes_lose_nothing(
    supabase: SupabaseDouble, store: SupabaseStore, db: psycopg.Connection
) -> None:
    _, cursor = await store.latest_events()
    supabase.withhold = lambda row_id: row_id % 3 == 0
    source = RealtimeActivitySource(
        supabase.url,
        SecretStr(supabase.key),
        store,
        cursor=cursor,
        poll_interval_s=1.0,
        backoff_min_s=0.05,
    )
    got = Collector()
    expected: list[int] = []
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(source.run, got)
        for i in range(10):
            expected += insert(db, (f"doc-{i % 3}", "active" if i % 2 else "idle"))
        with anyio.fail_after(10):
            await got.wait_for(5)
        await supabase.drop_websockets()
        # inserted while the socket is down: Realtime never replays these
        for i in range(10, 20):
            expected += insert(db, (f"doc-{i % 3}", "active" if i % 2 else "idle"))
        with anyio.fail_after(10):
            await supabase.subscribed.wait()  # a fresh client joined again
        for i in range(20, 30):
            expected += insert(db, (f"doc-{i % 3}", "active" if i % 2 else "idle"))
        with anyio.fail_after(15):
            await got.wait_for(len(expected))
        tg.cancel_scope.cancel()
    delivered = [e.id for e in got.events]
    assert delivered == expected  # once each, in id order
    assert len(supabase.joins) >= 2
    assert source.reconnects >= 1
    assert any(row_id % 3 == 0 for row_id in expected)
    assert not set(supabase.sent_changes) & {i for i in expected if i % 3 == 0}


async def test_realtime_down_events_still_flow_by_timer(
    supabase: SupabaseDouble, store: SupabaseStore, db: psycopg.Connection
) -> None:
    supabase.reject_websockets = True
    source = RealtimeActivitySource(
        supabase.url, SecretStr(supabase.key), store, cursor=0, poll_interval_s=0.2, backoff_min_s=5
    )
    got = Collector()
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(source.run, got)
        assert not source.connected
        ids = insert(db, ("a", "active"), ("a", "idle"))
        with anyio.fail_after(10):
            await got.wait_for(2)
        assert [e.id for e in got.events] == ids
        tg.cancel_scope.cancel()


async def test_wrong_key_fails_at_start_without_printing_it(
    supabase: SupabaseDouble,
    store: SupabaseStore,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-service-key-0123456789"
    with pytest.raises(ConfigurationError) as store_error:
        await SupabaseStore.connect(supabase.url, SecretStr(wrong))
    assert "SUPABASE_SERVICE_KEY" in str(store_error.value)
    assert "401" in str(store_error.value)

    source = RealtimeActivitySource(supabase.url, SecretStr(wrong), store, cursor=0)
    with anyio.fail_after(10), pytest.raises(ConfigurationError) as source_error:
        await source.run(Collector())
    assert "SUPABASE_SERVICE_KEY" in str(source_error.value)
    assert len(supabase.websocket_urls) == 1  # one attempt, no retry loop
    out, err = capfd.readouterr()
    for text in (str(store_error.value), str(source_error.value), caplog.text, out, err):
        assert wrong not in text
        assert supabase.key not in text


async def test_unreachable_url_fails_at_start_with_a_clear_error(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from manager.errors import StoreUnavailable

    caplog.set_level(logging.DEBUG)
    port = closed_port()
    key = "unreachable-service-key-987654321"
    with anyio.fail_after(15), pytest.raises(StoreUnavailable) as error:
        await SupabaseStore.connect(f"http://127.0.0.1:{port}", SecretStr(key))
    assert f"cannot reach Supabase at http://127.0.0.1:{port}" in str(error.value)
    out, err = capfd.readouterr()
    assert key not in caplog.text + out + err + str(error.value)
