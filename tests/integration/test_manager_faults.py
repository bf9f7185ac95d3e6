"""Manager-level faults: Postgres restarted under a running manager; rows it cannot use.

The manager runs in-process (``ManagerDaemon``) with real forkserver workers.
The restart test owns a private embedded Postgres (stopped and started again on
the same data directory) and real workers attached to a real y-websocket
server, so they keep running and reporting metrics through the outage.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import manager_standin
import psutil
import psycopg
import pytest
import structlog
from psycopg.rows import dict_row
from ywebsocket_server import YServer

from manager.config import Settings
from manager.daemon.driver import ManagerDaemon
from manager.embedded import EmbeddedPostgres
from manager.store.migrations import apply_migrations
from manager.store.postgres import PostgresStore
from manager.workers.launcher import WorkerLauncher

pytestmark = pytest.mark.anyio

FAST = {
    "max_concurrent_agents": 10,
    "min_residency_s": 0.0,
    "ping_interval_s": 0.5,
    "ping_timeout_s": 2.0,
    "detach_grace_s": 2.0,
    "kill_grace_s": 0.5,
    "shutdown_timeout_s": 5.0,
    "poll_interval_s": 0.5,
    "flush_interval_s": 0.1,
    "stats_interval_s": 3600.0,
    "extractor": "gazetteer",
    "metrics_interval_s": 0.2,
}


def make_settings(**overrides: Any) -> Settings:
    values = {"database_url": None, "supabase_url": None, "supabase_service_key": None}
    return Settings(_env_file=None, manager_id="faults-manager", **{**FAST, **values, **overrides})  # type: ignore[arg-type,call-arg]


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """One short-lived connection per query: the database may restart between two."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def event(url: str, document_id: str, kind: str = "active") -> int:
    rows = query(
        url,
        "INSERT INTO document_activity (document_id, event_type, user_count)"
        " VALUES (%s, %s, %s) RETURNING id",
        (document_id, kind, 0 if kind == "idle" else 1),
    )
    return int(rows[0]["id"])


def live(url: str) -> dict[str, dict[str, Any]]:
    rows = query(url, "SELECT * FROM agent_connections WHERE status = 'active'")
    return {r["document_id"]: r for r in rows}


async def until(predicate: Callable[[], Any], within: float = 20.0) -> Any:
    with anyio.fail_after(within):
        while not (value := predicate()):  # noqa: ASYNC110 (rows have no event to wait on)
            await anyio.sleep(0.05)
    return value


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@asynccontextmanager
async def running(
    settings: Settings, url: str, launcher: WorkerLauncher, store: PostgresStore
) -> AsyncIterator[ManagerDaemon]:
    daemon = ManagerDaemon(settings, store, url, launcher)
    ready, finished = anyio.Event(), anyio.Event()
    codes: list[int] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            codes.append(await daemon.run(ready=ready.set))
            finished.set()

        tg.start_soon(run)
        with anyio.fail_after(30):
            await ready.wait()
        yield daemon
        daemon.request_shutdown()
        with anyio.fail_after(20):
            await finished.wait()
    assert codes == [0]


@pytest.mark.slow
async def test_postgres_restart_mid_run(tmp_path: Path) -> None:
    home = tmp_path / "pg"
    server = EmbeddedPostgres(home)
    url = await anyio.to_thread.run_sync(server.start)
    launcher = WorkerLauncher()  # the real worker
    try:
        await apply_migrations(url)
        await anyio.to_thread.run_sync(launcher.warm_up)
        store = await PostgresStore.connect(url, timeout_s=0.5)
        try:
            async with (
                YServer().running() as ys,
                running(make_settings(ws_port=ys.port), url, launcher, store) as daemon,
            ):
                event(url, "doc-a")
                event(url, "doc-b")
                before = await until(lambda: len(live(url)) == 2 and live(url))
                pids = {doc: row["agent_pid"] for doc, row in before.items()}

                # --- the outage: the only holder lets go, the server stops --------
                await anyio.to_thread.run_sync(server.release)
                outage_from = datetime.now(UTC)
                await until(lambda: not daemon.writer.healthy, within=10)
                await until(lambda: daemon.listener is not None and not daemon.listener.connected)
                await anyio.sleep(1.0)  # the workers keep reporting; the writer buffers
                assert all(alive(pid) for pid in pids.values())
                assert daemon.writer.pending > 0
                health = daemon.monitor.health()
                assert health.healthy and health.details["database"] == "unreachable"
                outage_until = datetime.now(UTC)

                # --- back, same data directory ------------------------------------
                server = EmbeddedPostgres(home)
                assert await anyio.to_thread.run_sync(server.start) == url
                back = time.monotonic()
                listener = daemon.listener
                assert listener is not None

                def all_back() -> bool:
                    renewed = daemon.leases.renewed_at
                    return (
                        renewed is not None
                        and renewed > back
                        and daemon.writer.healthy
                        and listener.connected
                    )

                # Backoffs are capped: lease, listener and writer are back within 2 s.
                await until(all_back, within=2.0)
                print(f"back after the database: {time.monotonic() - back:.2f} s")
                # Inserted before the manager is back on its feet; order matters.
                ids = [
                    event(url, "doc-a", "idle"),
                    event(url, "doc-c", "active"),
                    event(url, "doc-c", "idle"),
                    event(url, "doc-d", "idle"),
                    event(url, "doc-d", "active"),
                ]
                after = await until(
                    lambda: (rows := live(url)).keys() == {"doc-b", "doc-d"} and rows, within=40
                )
                assert daemon.listener is not None
                await until(lambda: daemon.listener.cursor >= ids[-1])
                assert getattr(daemon.listener, "reconnects", 0) >= 1
                ended = query(
                    url,
                    "SELECT status, error_message FROM agent_connections"
                    " WHERE document_id = 'doc-a'",
                )
                assert ended == [{"status": "disconnected", "error_message": "idle"}]
                assert query(
                    url,
                    "SELECT count(*) AS n FROM agent_connections WHERE document_id = 'doc-c'"
                    " AND status IN ('connecting', 'active')",
                ) == [{"n": 0}]
                # doc-b's worker lived through it all: same life, same process.
                assert after["doc-b"]["agent_id"] == before["doc-b"]["agent_id"]
                assert alive(pids["doc-b"])
                # Metrics sampled during the outage were buffered and arrive now.
                await until(lambda: daemon.writer.healthy and daemon.writer.pending == 0)
                buffered = query(
                    url,
                    "SELECT count(*) AS n FROM agent_metrics WHERE agent_connection_id = %s"
                    " AND recorded_at BETWEEN %s AND %s",
                    (before["doc-b"]["id"], outage_from, outage_until),
                )
                assert buffered[0]["n"] >= 2
                assert daemon.monitor.health().healthy
        finally:
            await store.aclose()
    finally:
        launcher.kill_all()
        server.stop_now()
        server.release()


async def test_rows_the_manager_cannot_use_are_logged_and_skipped(database_url: str) -> None:
    admin = psycopg.connect(database_url, autocommit=True, row_factory=dict_row)
    with admin:
        # This test database only: let rows in that the schema normally refuses.
        for constraint in (
            "document_activity_event_type_known",
            "document_activity_document_id_length",
            "document_activity_user_count_check",
        ):
            admin.execute(f"ALTER TABLE document_activity DROP CONSTRAINT {constraint}")

        def insert(document_id: str, kind: str, users: int = 1, metadata: str = "{}") -> None:
            admin.execute(
                "INSERT INTO document_activity (document_id, event_type, user_count, metadata)"
                " VALUES (%s, %s, %s, %s::jsonb)",
                (document_id, kind, users, metadata),
            )

        insert("bad-at-start", "exploded")  # read by the start-up snapshot
        insert("fine-at-start", "active")
        launcher = WorkerLauncher(target=manager_standin.main)
        await anyio.to_thread.run_sync(launcher.warm_up)
        store = await PostgresStore.connect(database_url)
        try:
            with structlog.testing.capture_logs() as logs:
                async with running(make_settings(), database_url, launcher, store) as daemon:
                    await until(lambda: "fine-at-start" in live(database_url))
                    applied_before = daemon.supervisor.events_applied
                    insert("bad-1", "exploded")
                    insert("", "active")
                    insert("x" * 5000, "active")
                    insert("negative", "active", users=-3)
                    insert("junk-metadata", "active", metadata='"just a string"')
                    insert("junk-metadata-2", "active", metadata="[1, [2], null]")
                    insert("good-after", "active")
                    await until(
                        lambda: (
                            {"junk-metadata", "junk-metadata-2", "good-after"}
                            <= live(database_url).keys()
                        )
                    )
                    assert daemon.supervisor.events_applied - applied_before == 3
                    assert daemon.listener is not None
                    ids = query(database_url, "SELECT max(id) AS m FROM document_activity")
                    await until(lambda: daemon.listener.cursor == ids[0]["m"])
            docs = {
                r["document_id"] for r in query(database_url, "SELECT * FROM agent_connections")
            }
            assert docs == {"fine-at-start", "junk-metadata", "junk-metadata-2", "good-after"}
            skipped = [e for e in logs if e["event"] == "activity_event_skipped"]
            problems = sorted(e["problem"] for e in skipped)
            assert problems == [
                "bad_user_count",
                "document_id_too_long",
                "empty_document_id",
                "unknown_event_type",
                "unknown_event_type",
            ]
            assert all(len(e["document_id"]) <= 80 for e in skipped)  # logged, bounded
        finally:
            launcher.kill_all()
            await store.aclose()
