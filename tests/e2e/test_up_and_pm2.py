"""How people run docagents: `docagents up` in a terminal, and under real pm2.

Both start the real commands as subprocesses, open a document with a pycrdt
client, and check that an agent attaches, marks places, and that stopping the
whole thing leaves no process behind and every agent row ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import psycopg
import pytest
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from docserver_support import free_port
from manager_support import type_chars
from ywebsocket_server import HumanClient

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PM2 = REPO / "tests" / "js" / "node_modules" / ".bin" / "pm2"


async def until(predicate: Callable[[], Any], within: float = 30.0) -> Any:
    with anyio.fail_after(within):
        while not (value := predicate()):  # noqa: ASYNC110 (polling processes and rows)
            await anyio.sleep(0.1)
    return value


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _port_open(port: int) -> bool:
    return any(
        c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
        for c in psutil.net_connections("tcp")
    )


def _ws_url(port: int, document_id: str) -> str:
    return f"ws://127.0.0.1:{port}/parties/document/{document_id}"


def _base_env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DATABASE_URL"))}
    env.update(
        DOCAGENTS_HOME=str(home),
        WS_PORT=str(port),
        IDLE_TIMEOUT_MS="800",
        EXTRACTOR="gazetteer",
        SENTENCE_DEBOUNCE_MS="50",
        PING_INTERVAL_S="1",
        METRICS_INTERVAL_S="1",
        FLUSH_INTERVAL_S="0.2",
        STATS_INTERVAL_S="3600",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    return env


# --------------------------------------------------------------------- up


async def test_docagents_up_runs_everything_and_ctrl_c_stops_all(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    env = _base_env(home, port)
    env["MANAGER_ID"] = "up-test"
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "manager.cli", "up"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal job
        )
    worker_pids: list[int] = []
    try:
        await until(lambda: _port_open(port) or up.poll() is not None, within=60)
        assert up.poll() is None, log_path.read_text()
        postmaster = int((home / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
        children = {p.pid for p in psutil.Process(up.pid).children(recursive=True)}

        ann = HumanClient(_ws_url(port, "up-trip"))
        async with ann.connected():
            (run,) = ann.add_paragraph("")
            type_chars(run, "We flew from Lisbon to Oslo.")
            await ann.wait_for(lambda: len(ann.marks()) == 2, within=30)
            assert ann.marked_texts() == ["Lisbon", "Oslo"]
            worker_pids = [
                p.pid
                for p in psutil.Process(up.pid).children(recursive=True)
                if p.pid not in children and _alive(p.pid)
            ]
            assert worker_pids, "no worker process under docagents up"

            # Ctrl+C: SIGINT to the whole foreground process group.
            os.killpg(up.pid, signal.SIGINT)
            await until(lambda: up.poll() is not None, within=30)
        assert up.returncode == 0, log_path.read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    everything = [*worker_pids, postmaster, *children]
    await until(lambda: not any(_alive(pid) for pid in everything), within=10)
    assert not _port_open(port)

    # The rows of that life were ended before Postgres stopped.
    out = subprocess.run(  # noqa: ASYNC221 (everything else is stopped)
        [sys.executable, "-m", "manager.cli", "agents", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == ""
    stats = subprocess.run(  # noqa: ASYNC221
        [sys.executable, "-m", "manager.cli", "stats", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    system = json.loads(stats.stdout)["system"]
    assert system["total_agents"] == 0
    assert system["total_locations_marked"] == 2


@pytest.mark.filterwarnings("ignore:ConnectionClosed.code is deprecated:DeprecationWarning")
async def test_docagents_up_on_supabase_runs_no_embedded_postgres(
    database_url: str, tmp_path: Path
) -> None:
    """Only SUPABASE_URL + SUPABASE_SERVICE_KEY: docserver and manager both go through it."""
    from tests.integration.supabase_doubles import serve_supabase

    home = tmp_path / "home"
    port = free_port()
    env = _base_env(home, port)
    async with serve_supabase(database_url) as supabase:
        env.update(
            MANAGER_ID="up-supabase",
            SUPABASE_URL=supabase.url,
            SUPABASE_SERVICE_KEY=supabase.key,
            POLL_INTERVAL_S="1",
        )
        log_path = tmp_path / "up.log"
        with log_path.open("wb") as log:
            up = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "manager.cli", "up"],
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            await until(lambda: _port_open(port) or up.poll() is not None, within=60)
            assert up.poll() is None, log_path.read_text()
            ann = HumanClient(_ws_url(port, "sb-trip"))
            async with ann.connected():
                (run,) = ann.add_paragraph("")
                type_chars(run, "Then we drove from Porto to Seville.")
                await ann.wait_for(lambda: len(ann.marks()) == 2, within=30)
            os.killpg(up.pid, signal.SIGINT)
            await until(lambda: up.poll() is not None, within=30)
            assert up.returncode == 0, log_path.read_text()
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()
        assert supabase.unexpected == []
    assert not (home / "pgdata").exists()
    assert supabase.key not in log_path.read_text()
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        events = [
            r["event_type"]
            for r in conn.execute(
                "SELECT event_type FROM document_activity WHERE document_id = 'sb-trip' ORDER BY id"
            )
        ]
        lives = conn.execute(
            "SELECT status, locations_marked_count FROM agent_connections"
            " WHERE document_id = 'sb-trip'"
        ).fetchall()
    assert events[0] == "active"
    assert lives == [{"status": "disconnected", "locations_marked_count": 2}]


# --------------------------------------------------------------------- pm2


@pytest.fixture
def pm2_env(tmp_path: Path, database_url: str) -> Iterator[dict[str, str]]:
    assert PM2.exists(), "pm2 missing: scripts/setup --test runs npm ci in tests/js"
    port = free_port()
    env = _base_env(tmp_path / "home", port)
    env.update(
        PM2_HOME=str(tmp_path / "pm2"),
        DATABASE_URL=database_url,
        DOCSERVER_AGENT_TOKEN="pm2-test-token",
        MANAGER_ID="pm2-test",
    )
    try:
        yield env
    finally:
        subprocess.run([str(PM2), "kill"], env=env, capture_output=True, timeout=60, check=False)


def _pm2(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(PM2), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _live_rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM agent_connections WHERE status IN ('connecting', 'active')"
        ).fetchall()


async def test_under_pm2_stop_leaves_nothing_and_restart_brings_the_agent_back(
    pm2_env: dict[str, str], database_url: str
) -> None:
    port = int(pm2_env["WS_PORT"])
    await anyio.to_thread.run_sync(_pm2, pm2_env, "start", "pm2/ecosystem.config.js")
    await until(lambda: _port_open(port), within=60)

    ann = HumanClient(_ws_url(port, "pm2-doc"))
    async with ann.connected():
        first = await until(
            lambda: [r for r in _live_rows(database_url) if r["status"] == "active"], within=60
        )
        pid = first[0]["agent_pid"]
        assert _alive(pid)

        await anyio.to_thread.run_sync(_pm2, pm2_env, "stop", "docagents-manager")
        await until(lambda: not _alive(pid), within=10)
        assert _live_rows(database_url) == []
        with psycopg.connect(database_url, row_factory=dict_row) as conn:
            ended = conn.execute(
                "SELECT status, disconnected_at FROM agent_connections WHERE agent_pid = %s",
                (pid,),
            ).fetchone()
        assert ended is not None and ended["status"] == "disconnected"
        assert ended["disconnected_at"] is not None

        await anyio.to_thread.run_sync(_pm2, pm2_env, "restart", "docagents-manager")
        again = await until(
            lambda: [r for r in _live_rows(database_url) if r["status"] == "active"], within=60
        )
        assert again[0]["document_id"] == "pm2-doc"
        assert again[0]["agent_pid"] != pid and _alive(again[0]["agent_pid"])
        (run,) = ann.add_paragraph("")
        type_chars(run, "Then on to Madrid.")
        await ann.wait_for(lambda: ann.marked_texts() == ["Madrid"], within=30)

    await anyio.to_thread.run_sync(_pm2, pm2_env, "delete", "all")
