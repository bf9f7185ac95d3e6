"""StoreWriter against a real Postgres that goes away and comes back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import psycopg
import pytest

from manager.embedded import EmbeddedPostgres
from manager.errors import StoreUnavailable
from manager.store.base import BatchId, MetricsRecord
from manager.store.migrations import apply_migrations
from manager.store.postgres import PostgresStore
from manager.store.writer import StoreWriter
from tests.integration.lease_support import hold_lease

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _leases(database_url: str) -> None:
    """claim_document needs a valid lease."""
    hold_lease(database_url, "m1")


async def test_one_record_agent_metrics_call_per_flush(database_url: str) -> None:
    store = await PostgresStore.connect(database_url)
    try:
        await store.claim_document("doc", "a1", "m1", None)
        writer = StoreWriter(store)
        writer.set_status("a1", "active", pid=11)
        for i in range(100):
            writer.add_metrics("a1", memory_mb=float(i), cpu_percent=1.0)
            writer.count("a1", llm_calls=1)
        with psycopg.connect(database_url, autocommit=True) as db:
            db.execute("SELECT pg_stat_reset()")
            db.execute("SET track_functions = 'all'")
            await writer.flush()
            metrics = db.execute("SELECT count(*) FROM agent_metrics").fetchone()
            snapshot = db.execute(
                "SELECT status, agent_pid, llm_calls_count, memory_mb FROM agent_connections"
            ).fetchone()
        assert metrics == (100,)
        assert snapshot is not None
        assert snapshot[:3] == ("active", 11, 100)
        assert writer.metrics_calls == 1
    finally:
        await store.aclose()


class AnswerLost(PostgresStore):
    """The real store; the first ``lose`` metrics calls commit, then the answer is lost
    (what the writer sees when the connection drops right after the commit)."""

    lose = 0

    async def record_metrics(
        self, batch: Sequence[MetricsRecord], batch_id: BatchId | None = None
    ) -> int | None:
        inserted = await super().record_metrics(batch, batch_id)
        if self.lose:
            self.lose -= 1
            raise StoreUnavailable("server closed the connection unexpectedly")
        return inserted


async def test_a_batch_committed_but_unanswered_counts_once(database_url: str) -> None:
    store = await AnswerLost.connect(database_url)
    try:
        await store.claim_document("doc", "a1", "m1", None)
        writer = StoreWriter(store)
        writer.add_metrics("a1", memory_mb=30.0)
        writer.count("a1", llm_calls=3, locations_marked=2)
        store.lose = 1
        with pytest.raises(StoreUnavailable):
            await writer.flush()
        writer.count("a1", llm_calls=1)
        await writer.flush()
        assert writer.pending == 0
    finally:
        await store.aclose()
    with psycopg.connect(database_url) as db:
        row = db.execute(
            "SELECT (SELECT count(*) FROM agent_metrics)::int, llm_calls_count,"
            " locations_marked_count FROM agent_connections"
        ).fetchone()
    assert row == (1, 4, 2)  # without the batch id: (2, 7, 4)


@pytest.mark.slow
async def test_database_restart_buffers_then_flushes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = EmbeddedPostgres(home)
    url = server.start()
    try:
        await apply_migrations(url)
        hold_lease(url, "m1")
        store = await PostgresStore.connect(url, timeout_s=0.5)
        writer = StoreWriter(store, flush_interval_s=0.1, backoff_min_s=0.05, backoff_max_s=0.3)
        try:
            await store.claim_document("doc", "a1", "m1", None)
            async with anyio.create_task_group() as tg:
                await tg.start(writer.run)
                writer.set_status("a1", "active", pid=42)
                await writer.flush()

                await anyio.to_thread.run_sync(server.release)  # stops it (last holder)
                writer.add_metrics("a1", memory_mb=30.0)
                writer.count("a1", locations_marked=2)
                writer.set_status("a1", "detaching")
                writer.end_life("a1", "disconnected", "idle")
                with pytest.raises(StoreUnavailable):
                    await writer.flush()
                assert not writer.healthy
                assert writer.pending == 4

                server = EmbeddedPostgres(home)
                await anyio.to_thread.run_sync(server.start)
                with anyio.fail_after(20):
                    while writer.pending or not writer.healthy:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
        finally:
            await store.aclose()
        with psycopg.connect(url) as db:
            row = db.execute(
                "SELECT status, error_message, locations_marked_count, memory_mb::float "
                "FROM agent_connections WHERE agent_id = 'a1'"
            ).fetchone()
            samples = db.execute("SELECT count(*) FROM agent_metrics").fetchone()
        assert row == ("disconnected", "idle", 2, 30.0)
        assert samples == (1,)
    finally:
        server.stop_now()
        server.release()
