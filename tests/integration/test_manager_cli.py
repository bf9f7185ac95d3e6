"""`docagents manager` as a real process: kill -9, restart recovery, SIGTERM, credentials.

Real workers (worker.main.process_main from the forkserver) attach to a real
y-websocket server (tests/integration/ywebsocket_server.py) running in the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import psycopg
import pytest
from manager_support import start_manager
from psycopg.rows import dict_row
from ywebsocket_server import YServer

pytestmark = pytest.mark.anyio


def manager_env(database_url: str, port: int, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DOCAGENTS_HOME": str(tmp_path / "home"),
        "MANAGER_ID": "cli-manager",
        "WS_PORT": str(port),
        "PING_INTERVAL_S": "0.5",
        "PING_TIMEOUT_S": "1",
        "DETACH_GRACE_S": "3",
        "SHUTDOWN_TIMEOUT_S": "8",
        "FLUSH_INTERVAL_S": "0.2",
        "MIN_RESIDENCY_S": "0",
        "LOG_FORMAT": "json",
        "EXTRACTOR": "gazetteer",
        "DOCSERVER_AGENT_TOKEN": "test-agent-token",
    }
    env.pop("OPENAI_API_KEY", None)
    env.update(extra)
    return env


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def event(db: psycopg.Connection[Any], document_id: str, kind: str = "active") -> None:
    db.execute(
        "INSERT INTO document_activity (document_id, event_type, user_count) VALUES (%s, %s, %s)",
        (document_id, kind, 0 if kind == "idle" else 1),
    )


def rows(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return db.execute("SELECT * FROM agent_connections ORDER BY connected_at").fetchall()


def active(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return [r for r in rows(db) if r["status"] == "active"]


async def until(predicate: Callable[[], Any], within: float = 20.0) -> Any:
    with anyio.fail_after(within):
        while not (value := predicate()):  # noqa: ASYNC110 (polling the database)
            await anyio.sleep(0.05)
    return value


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def test_manager_kill9_leaves_no_orphans_and_restart_recovers(
    database_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    async with YServer().running() as server:
        env = manager_env(database_url, server.port, tmp_path)
        first = start_manager(env, tmp_path, "first")
        try:
            for doc in ("k1", "k2", "k3"):
                event(db, doc)
            live = await until(lambda: len(active(db)) == 3 and active(db))
            pids = [r["agent_pid"] for r in live]
            # Invariant 6 with the real worker: no credentials in its environment.
            for pid in pids:
                environ = Path(f"/proc/{pid}/environ").read_bytes()  # noqa: ASYNC240
                names = {item.split(b"=")[0] for item in environ.split(b"\0") if item}
                assert b"DATABASE_URL" not in names and b"PGPASSWORD" not in names
                assert b"WS_PORT" in names
            first.send_signal(signal.SIGKILL)
            first.wait()
            killed_at = time.monotonic()
            await until(lambda: not any(alive(pid) for pid in pids), within=5)
            assert time.monotonic() - killed_at <= 2.0
        finally:
            stop(first)
        assert len(active(db)) == 3  # stale: nobody ended them

        second = start_manager(env, tmp_path, "second")
        try:
            await until(
                lambda: (
                    len(active(db)) == 3
                    and {r["agent_id"] for r in active(db)}.isdisjoint(
                        {r["agent_id"] for r in live}
                    )
                )
            )
            stale = [r for r in rows(db) if r["agent_id"] in {x["agent_id"] for x in live}]
            assert {r["status"] for r in stale} == {"disconnected"}
            assert {r["error_message"] for r in stale} == {"manager_restarted"}
            assert {r["document_id"] for r in active(db)} == {"k1", "k2", "k3"}
            second.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                while second.poll() is None:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            assert second.returncode == 0
        finally:
            stop(second)


async def test_sigterm_with_ten_agents_detaches_all_and_exits_zero(
    database_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    async with YServer().running() as server:
        env = manager_env(database_url, server.port, tmp_path)
        proc = start_manager(env, tmp_path, "manager")
        try:
            for i in range(10):
                event(db, f"doc-{i}")
            live = await until(lambda: len(active(db)) == 10 and active(db))
            pids = [r["agent_pid"] for r in live]
            proc.send_signal(signal.SIGUSR1)  # the stats box, on demand
            log = tmp_path / "manager.log"
            await until(lambda: "Running / cap" in log.read_text(), within=5)
            assert "10 / 10" in log.read_text()
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                while proc.poll() is None:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            assert time.monotonic() - started < 10
            assert proc.returncode == 0
        finally:
            stop(proc)
    final = rows(db)
    assert len(final) == 10
    assert {r["status"] for r in final} == {"disconnected"}
    assert {r["error_message"] for r in final} == {"manager_shutdown"}
    assert not any(alive(pid) for pid in pids)


def test_manager_refuses_a_database_without_schema(empty_database_url: str, tmp_path: Path) -> None:
    env = manager_env(empty_database_url, 1, tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "manager.cli", "manager"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "docagents migrate" in out.stderr
