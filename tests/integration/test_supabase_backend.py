"""Backend selection, and the whole manager daemon running on the Supabase backend.

The daemon talks only to the Supabase double (PostgREST + Realtime over real
sockets, real Postgres behind it); the test reads the rows directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import manager_standin
import psutil
import psycopg
import pytest
from psycopg.rows import dict_row

from manager.backends import Backend, open_backend, select_backend
from manager.config import Settings
from manager.daemon.driver import ManagerDaemon
from manager.errors import ConfigurationError, StoreUnavailable
from manager.workers.launcher import WorkerLauncher
from tests.integration.supabase_doubles import SupabaseDouble, serve_supabase

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:ConnectionClosed.code is deprecated:DeprecationWarning"),
]

FAST = {
    "max_concurrent_agents": 10,
    "min_residency_s": 0.0,
    "ping_interval_s": 0.3,
    "ping_timeout_s": 0.5,
    "detach_grace_s": 2.0,
    "kill_grace_s": 0.5,
    "shutdown_timeout_s": 5.0,
    "poll_interval_s": 1.0,
    "flush_interval_s": 0.1,
    "stats_interval_s": 3600.0,
}


def settings(**values: Any) -> Settings:
    base = {"database_url": None, "supabase_url": None, "supabase_service_key": None}
    return Settings(manager_id="sb-manager", _env_file=None, **{**FAST, **base, **values})  # type: ignore[arg-type,call-arg]


def test_selection() -> None:
    assert select_backend(settings(database_url="postgresql://x/y")) == "postgres"
    assert (
        select_backend(
            settings(
                database_url="postgresql://x/y",
                supabase_url="https://p.supabase.co",
                supabase_service_key="k",
            )
        )
        == "postgres"
    )
    assert (
        select_backend(settings(supabase_url="https://p.supabase.co", supabase_service_key="k"))
        == "supabase"
    )
    assert select_backend(settings()) == "embedded"
    with pytest.raises(ConfigurationError, match="SUPABASE_SERVICE_KEY is not set"):
        select_backend(settings(supabase_url="https://p.supabase.co"))


async def test_postgres_backend_from_database_url(database_url: str) -> None:
    async with open_backend(settings(database_url=database_url)) as backend:
        assert backend.kind == "postgres"
        assert backend.conninfo == database_url
        assert (await backend.store.system_stats()).total_agents == 0
        assert type(backend.activity_source(0)).__name__ == "ActivityListener"


async def test_unreachable_supabase_is_a_clear_error_at_start() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = "sb-key-never-printed-42"
    with (
        anyio.fail_after(15),
        pytest.raises(StoreUnavailable, match="cannot reach Supabase") as error,
    ):
        async with open_backend(
            settings(supabase_url=f"http://127.0.0.1:{port}", supabase_service_key=key)
        ):
            pass
    assert key not in str(error.value)


class Rows:
    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)

    def event(self, document_id: str, event_type: str = "active") -> None:
        self.conn.execute(
            "INSERT INTO document_activity (document_id, event_type, user_count)"
            " VALUES (%s, %s, %s)",
            (document_id, event_type, 0 if event_type == "idle" else 1),
        )

    def lives(self, document_id: str) -> list[dict[str, Any]]:
        return self.conn.execute(
            "SELECT * FROM agent_connections WHERE document_id = %s ORDER BY connected_at",
            (document_id,),
        ).fetchall()


async def until(predicate: Callable[[], Any], within: float = 15.0) -> Any:
    with anyio.fail_after(within):
        while not (value := predicate()):  # noqa: ASYNC110  (rows have no event to wait on)
            await anyio.sleep(0.05)
    return value


@pytest.fixture
async def supabase(database_url: str) -> AsyncIterator[SupabaseDouble]:
    async with serve_supabase(database_url) as double:
        yield double
        assert double.unexpected == []


async def test_manager_on_supabase_attaches_and_detaches(
    supabase: SupabaseDouble, database_url: str
) -> None:
    launcher = WorkerLauncher(target=manager_standin.main)
    await anyio.to_thread.run_sync(launcher.warm_up)
    config = settings(supabase_url=supabase.url, supabase_service_key=supabase.key)
    rows = Rows(database_url)
    rows.event("already-open")  # wanted before the manager starts
    try:
        async with open_backend(config) as backend:
            assert backend.kind == "supabase" and backend.conninfo is None
            assert supabase.key not in backend.description
            await _run_daemon(config, backend, launcher, rows, supabase)
    finally:
        launcher.kill_all()
        rows.conn.close()


async def _run_daemon(
    config: Settings,
    backend: Backend,
    launcher: WorkerLauncher,
    rows: Rows,
    supabase: SupabaseDouble,
) -> None:
    daemon = ManagerDaemon(
        config,
        backend.store,
        backend.conninfo,
        launcher,
        activity_source=backend.activity_source,
        writer=backend.writer,
    )
    ready = anyio.Event()
    result: list[int] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            result.append(await daemon.run(ready=ready.set))

        tg.start_soon(run)
        with anyio.fail_after(20):
            await ready.wait()
        await until(lambda: [r for r in rows.lives("already-open") if r["status"] == "active"])
        rows.event("doc-1")
        live = await until(lambda: [r for r in rows.lives("doc-1") if r["status"] == "active"])
        pid = live[0]["agent_pid"]
        assert pid and psutil.pid_exists(pid)
        await until(lambda: supabase.rpc_calls("record_agent_metrics_once") > 0)
        rows.event("doc-1", "idle")
        await until(lambda: rows.lives("doc-1")[-1]["status"] == "disconnected")
        assert rows.lives("doc-1")[-1]["error_message"] == "idle"
        daemon.request_shutdown()
    assert result == [0]
    assert rows.lives("already-open")[-1]["status"] == "disconnected"
    assert supabase.rpc_calls("claim_document") == 2
    assert len(supabase.joins) >= 1  # the events came through the Realtime source
