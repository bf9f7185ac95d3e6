"""`docagents manager` as a real process on Supabase (only SUPABASE_URL + SUPABASE_SERVICE_KEY).

The Supabase double (PostgREST + Realtime over real sockets, a real Postgres
behind it) runs in the test; the manager process talks only to it. Its real
workers attach to a real y-websocket server.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from manager_support import start_manager
from psycopg.rows import dict_row
from ywebsocket_server import YServer

from manager.cli.up import EX_CONFIG, EX_UNAVAILABLE
from tests.integration.supabase_doubles import SupabaseDouble, serve_supabase

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:ConnectionClosed.code is deprecated:DeprecationWarning"),
]


@pytest.fixture
async def supabase(database_url: str) -> AsyncIterator[SupabaseDouble]:
    async with serve_supabase(database_url) as double:
        yield double
        assert double.unexpected == []


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def supabase_env(url: str, key: str, tmp_path: Path, ws_port: int = 1) -> dict[str, str]:
    env = {
        **os.environ,
        "SUPABASE_URL": url,
        "SUPABASE_SERVICE_KEY": key,
        "DOCAGENTS_HOME": str(tmp_path / "home"),
        "MANAGER_ID": "sb-cli-manager",
        "WS_PORT": str(ws_port),
        "PING_INTERVAL_S": "0.5",
        "PING_TIMEOUT_S": "1",
        "DETACH_GRACE_S": "3",
        "SHUTDOWN_TIMEOUT_S": "8",
        "FLUSH_INTERVAL_S": "0.2",
        "POLL_INTERVAL_S": "1",
        "MIN_RESIDENCY_S": "0",
        "DOCSERVER_AGENT_TOKEN": "test-agent-token",
        "LOG_FORMAT": "json",
        "EXTRACTOR": "gazetteer",
    }
    for name in ("DATABASE_URL", "OPENAI_API_KEY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "PGPASSWORD"):
        env.pop(name, None)
    return env


async def until(predicate: Callable[[], Any], within: float = 20.0) -> Any:
    with anyio.fail_after(within):
        while not (value := predicate()):  # noqa: ASYNC110 (rows have no event to wait on)
            await anyio.sleep(0.05)
    return value


async def run_to_exit(env: dict[str, str], tmp_path: Path, within: float = 60) -> tuple[int, str]:
    """Run `docagents manager` until it exits by itself; (exit code, all output)."""
    proc = start_manager(env, tmp_path, "manager")
    try:
        with anyio.fail_after(within):
            while proc.poll() is None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, (tmp_path / "manager.log").read_text()


async def test_manager_process_on_supabase_attaches_a_worker(
    supabase: SupabaseDouble, db: psycopg.Connection[dict[str, Any]], tmp_path: Path
) -> None:
    async with YServer().running() as server:
        env = supabase_env(supabase.url, supabase.key, tmp_path, server.port)
        log_path = tmp_path / "manager.log"
        proc = start_manager(env, tmp_path, "manager")
        try:
            await until(lambda: "manager_ready" in log_path.read_text(), within=30)
            db.execute(
                "INSERT INTO document_activity (document_id, event_type, user_count)"
                " VALUES ('sb-doc', 'active', 1)"
            )
            row = await until(
                lambda: db.execute(
                    "SELECT * FROM agent_connections WHERE document_id = 'sb-doc'"
                    " AND status = 'active'"
                ).fetchone()
            )
            assert row["manager_id"] == "sb-cli-manager"
            assert supabase.rpc_calls("claim_document") == 1
            assert len(supabase.joins) >= 1  # woken through Realtime
            # The worker got neither the URL nor the key (invariant 6).
            environ = Path(f"/proc/{row['agent_pid']}/environ").read_bytes()  # noqa: ASYNC240
            assert supabase.key.encode() not in environ
            assert b"SUPABASE_URL" not in environ
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                while proc.poll() is None:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_path.read_text()
    assert proc.returncode == 0, output[-3000:]
    assert supabase.key not in output
    assert not (tmp_path / "home" / "pgdata").exists()  # no embedded Postgres was started
    final = db.execute(
        "SELECT status, error_message FROM agent_connections WHERE document_id = 'sb-doc'"
    ).fetchall()
    assert final == [{"status": "disconnected", "error_message": "manager_shutdown"}]


async def test_wrong_key_exits_with_the_configuration_code(
    supabase: SupabaseDouble, tmp_path: Path
) -> None:
    key = "wrong-service-key-do-not-print-9f3a"
    code, output = await run_to_exit(supabase_env(supabase.url, key, tmp_path), tmp_path)
    assert code == EX_CONFIG, output[-3000:]
    assert "configuration error" in output and "SUPABASE_SERVICE_KEY" in output
    assert key not in output and supabase.key not in output
    assert "Traceback" not in output
    assert supabase.rpc_calls("claim_document") == 0


async def test_unreachable_url_exits_unavailable_without_the_key(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    key = "unreachable-key-do-not-print-77c1"
    code, output = await run_to_exit(
        supabase_env(f"http://127.0.0.1:{port}", key, tmp_path), tmp_path
    )
    assert code == EX_UNAVAILABLE, output[-3000:]
    assert "cannot reach Supabase" in output
    assert key not in output and "Traceback" not in output


async def test_only_one_supabase_variable_is_a_configuration_error(tmp_path: Path) -> None:
    env = supabase_env("https://project.supabase.co", "k", tmp_path)
    del env["SUPABASE_SERVICE_KEY"]
    code, output = await run_to_exit(env, tmp_path)
    assert code == EX_CONFIG, output[-3000:]
    assert "SUPABASE_SERVICE_KEY is not set" in output
