"""Operations: sd_notify over a real datagram socket, retention run by the daemon, exit codes.

The in-process tests run :class:`ManagerDaemon` with stand-in workers (real
forkserver processes) on a real Postgres; the sd_notify receiver is a real
``AF_UNIX``/``SOCK_DGRAM`` socket read by a thread, so it keeps receiving (and
time-stamping) while the daemon's event loop is blocked on purpose.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import manager_standin
import psycopg
import pytest
from manager_support import running_manager, start_manager
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from ywebsocket_server import YServer

from manager.cli.up import EX_CONFIG
from manager.config import Settings
from manager.ops.sdnotify import SystemdNotifier
from manager.workers.launcher import WorkerLauncher
from tests.integration.lease_support import expire_lease, hold_lease

pytestmark = pytest.mark.anyio

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


def make_settings(manager_id: str = "ops-manager", **overrides: Any) -> Settings:
    values = {"database_url": None, "supabase_url": None, "supabase_service_key": None}
    return Settings(_env_file=None, manager_id=manager_id, **{**FAST, **values, **overrides})  # type: ignore[arg-type,call-arg]


@pytest.fixture(scope="module")
def launcher() -> WorkerLauncher:
    launcher = WorkerLauncher(target=manager_standin.main)
    launcher.warm_up()
    return launcher


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def event(db: psycopg.Connection[Any], document_id: str, kind: str = "active") -> None:
    db.execute(
        "INSERT INTO document_activity (document_id, event_type, user_count) VALUES (%s, %s, %s)",
        (document_id, kind, 0 if kind == "idle" else 1),
    )


def live(db: psycopg.Connection[Any], document_id: str) -> dict[str, Any] | None:
    return db.execute(
        "SELECT * FROM agent_connections WHERE document_id = %s AND status = 'active'",
        (document_id,),
    ).fetchone()


async def until(predicate: Callable[[], Any], within: float = 15.0) -> Any:
    with anyio.fail_after(within):
        while not (value := predicate()):  # noqa: ASYNC110 (rows and datagrams have no event)
            await anyio.sleep(0.02)
    return value


class NotifySocket:
    """A systemd-like receiver: every datagram with its arrival time (read by a thread)."""

    def __init__(self, path: Path, on_message: Callable[[str], None] | None = None) -> None:
        self.path = str(path)
        self.messages: list[tuple[float, str]] = []
        self._on_message = on_message
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)

    def __enter__(self) -> NotifySocket:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            at = time.monotonic()
            text = data.decode()
            if self._on_message is not None:
                self._on_message(text)
            self.messages.append((at, text))

    def times(self, line: str) -> list[float]:
        return [at for at, text in list(self.messages) if line in text.split("\n")]

    def texts(self) -> list[str]:
        return [text for _, text in list(self.messages)]


async def test_ready_after_recovery_watchdog_periodic_and_silent_while_loop_blocked(
    database_url: str,
    db: psycopg.Connection[dict[str, Any]],
    launcher: WorkerLauncher,
    tmp_path: Path,
) -> None:
    # A life this manager left behind (killed earlier): recovery must end it before READY.
    event(db, "doc-r")
    hold_lease(db, "ops-manager")  # a previous run that died: its lease expired
    db.execute(
        "SELECT * FROM claim_document('doc-r', 'stale-agent', 'ops-manager', 'h', '{}'::jsonb)"
    )
    expire_lease(db, "ops-manager")
    db.execute("SELECT * FROM set_agent_status('stale-agent', 'active', 999999)")
    at_ready: list[Any] = []

    def on_message(text: str) -> None:
        if text.startswith("READY=1"):  # what the database says at the moment READY arrives
            with psycopg.connect(database_url) as conn:
                at_ready.append(
                    conn.execute(
                        "SELECT status, error_message FROM agent_connections"
                        " WHERE agent_id = 'stale-agent'"
                    ).fetchone()
                )

    with NotifySocket(tmp_path / "notify.sock", on_message) as sock:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": sock.path, "WATCHDOG_USEC": "400000"})
        async with running_manager(
            make_settings(), database_url, launcher, notifier=notifier
        ) as daemon:
            assert daemon.monitor.period_s == pytest.approx(0.2)
            await until(lambda: len(sock.times("WATCHDOG=1")) >= 5, within=10)
            (ready_text,) = [t for t in sock.texts() if t.startswith("READY=1")]
            assert at_ready == [("disconnected", "manager_restarted")]
            assert "STATUS=running 1/10, waiting 0" in ready_text.split("\n")
            await until(lambda: live(db, "doc-r"))

            # Block the event loop itself (a synchronous call in a task of the loop).
            blocked_from = time.monotonic()
            time.sleep(1.2)  # noqa: ASYNC251 (blocking the loop is the point)
            blocked_until = time.monotonic()
            await until(
                lambda: len([t for t in sock.times("WATCHDOG=1") if t > blocked_until]) >= 3,
                within=5,
            )
            times = sock.times("WATCHDOG=1")
            assert [t for t in times if blocked_from + 0.05 < t < blocked_until] == []
            last_before = max(t for t in times if t <= blocked_from + 0.05)
            first_after = min(t for t in times if t > blocked_until)
            # The first beat after the block measured the lag and sent nothing.
            assert first_after - last_before >= 1.2
        await until(lambda: sock.times("STOPPING=1"), within=2)


async def test_status_follows_counts(
    database_url: str,
    db: psycopg.Connection[dict[str, Any]],
    launcher: WorkerLauncher,
    tmp_path: Path,
) -> None:
    with NotifySocket(tmp_path / "n.sock") as sock:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": sock.path})
        settings = make_settings(max_concurrent_agents=1, min_residency_s=30.0)
        async with running_manager(settings, database_url, launcher, notifier=notifier):
            assert sock.times("WATCHDOG=1") == []  # no WATCHDOG_USEC: no watchdog
            event(db, "s-1")
            await until(lambda: live(db, "s-1"))
            event(db, "s-2")  # at capacity, s-1 too young to evict: waits
            waiting = "STATUS=running 1/1, waiting 1"
            await until(lambda: waiting in sock.texts(), within=5)
            event(db, "s-1", "idle")
            await until(lambda: live(db, "s-2"))

            def after_waiting() -> list[str]:
                texts = sock.texts()
                return texts[texts.index(waiting) + 1 :]

            await until(lambda: "STATUS=running 1/1, waiting 0" in after_waiting(), within=5)
        statuses = [t for t in sock.texts() if t.startswith("STATUS=")]
        assert all(a != b for a, b in itertools.pairwise(statuses))  # only on change
        times = [at for at, t in sock.messages if t.startswith("STATUS=")]
        assert all(b - a >= 0.9 for a, b in itertools.pairwise(times))  # at most once a second


def manager_env(database_url: str, port: int, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DOCAGENTS_HOME": str(tmp_path / "home"),
        "MANAGER_ID": "cli-ops-manager",
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
    for name in ("OPENAI_API_KEY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(name, None)
    env.update(extra)
    return env


async def test_real_manager_process_ready_watchdog_status_stopping_on_sigterm(
    database_url: str, db: psycopg.Connection[dict[str, Any]], tmp_path: Path
) -> None:
    with NotifySocket(tmp_path / "notify.sock") as sock:
        async with YServer().running() as server:
            env = manager_env(
                database_url,
                server.port,
                tmp_path,
                NOTIFY_SOCKET=sock.path,
                WATCHDOG_USEC="1000000",
            )
            proc = start_manager(env, tmp_path, "manager")
            try:
                await until(lambda: sock.times("READY=1"), within=30)
                event(db, "notify-doc")
                row = await until(lambda: live(db, "notify-doc"), within=20)
                await until(lambda: "STATUS=running 1/10, waiting 0" in sock.texts(), within=5)
                await until(lambda: len(sock.times("WATCHDOG=1")) >= 3, within=5)
                # The sd_notify variables are the manager's alone: no worker inherits them.
                environ = Path(f"/proc/{row['agent_pid']}/environ").read_bytes()  # noqa: ASYNC240
                names = {item.split(b"=")[0] for item in environ.split(b"\0") if item}
                assert b"NOTIFY_SOCKET" not in names and b"WATCHDOG_USEC" not in names
                proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(15):
                    while proc.poll() is None:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert proc.returncode == 0, (tmp_path / "manager.log").read_text()[-3000:]
        (stopping,) = sock.times("STOPPING=1")
        assert stopping > sock.times("READY=1")[0]
    final = db.execute(
        "SELECT status, error_message FROM agent_connections WHERE document_id = 'notify-doc'"
    ).fetchall()
    assert final == [{"status": "disconnected", "error_message": "manager_shutdown"}]


async def test_retention_runs_in_the_daemon(
    database_url: str, db: psycopg.Connection[dict[str, Any]], launcher: WorkerLauncher
) -> None:
    old = "now() - interval '10 days'"
    hold_lease(db, "elsewhere")
    db.execute("SELECT * FROM claim_document('old-doc', 'old-agent', 'elsewhere', 'h')")
    db.execute("SELECT * FROM end_agent_life('old-agent', 'disconnected', 'idle')")
    agent_uuid = db.execute(
        "SELECT id FROM agent_connections WHERE agent_id = 'old-agent'"
    ).fetchone()["id"]
    db.execute(
        "INSERT INTO agent_metrics (agent_connection_id, document_id, memory_mb, recorded_at)"
        f" SELECT %s, 'old-doc', 10, {old} FROM generate_series(1, 30)",
        (agent_uuid,),
    )
    db.execute(
        "INSERT INTO agent_metrics (agent_connection_id, document_id, memory_mb)"
        " VALUES (%s, 'old-doc', 11)",
        (agent_uuid,),
    )
    # Old history: three documents; 'keep-active' still has someone in it (latest = active).
    for doc, kinds in {
        "old-doc": ["active", "idle", "active", "idle"],
        "keep-active": ["active", "idle", "active"],
        "gone": ["active", "idle"],
    }.items():
        for kind in kinds:
            db.execute(
                "INSERT INTO document_activity (document_id, event_type, user_count, timestamp)"
                f" VALUES (%s, %s, %s, {old})",
                (doc, kind, 0 if kind == "idle" else 1),
            )
    latest = {
        r["document_id"]: r["id"]
        for r in db.execute(
            "SELECT DISTINCT ON (document_id) document_id, id FROM document_activity"
            " ORDER BY document_id, id DESC"
        ).fetchall()
    }
    settings = make_settings(retention_days=1, retention_interval_s=0.2)
    async with running_manager(settings, database_url, launcher):
        await until(
            lambda: db.execute("SELECT count(*) AS n FROM document_activity").fetchone()["n"] == 3
        )
        await until(lambda: old_doc_metrics(db) == [11.0])
        # The kept 'active' event still makes its document wanted.
        await until(lambda: live(db, "keep-active"))
        event(db, "fresh")  # new rows are not touched by later rounds
        await until(lambda: live(db, "fresh"))
        await anyio.sleep(0.5)  # two more retention rounds
        left = {
            r["document_id"]: r["id"]
            for r in db.execute("SELECT document_id, id FROM document_activity").fetchall()
        }
        assert {d: i for d, i in left.items() if d != "fresh"} == latest
        assert "fresh" in left
    assert old_doc_metrics(db) == [11.0]


def old_doc_metrics(db: psycopg.Connection[Any]) -> list[float]:
    rows = db.execute(
        "SELECT memory_mb::float AS m FROM agent_metrics WHERE document_id = 'old-doc'"
    ).fetchall()
    return [r["m"] for r in rows]


def test_missing_schema_exits_with_the_configuration_code(
    empty_database_url: str, tmp_path: Path
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "manager.cli", "manager"],
        env=manager_env(empty_database_url, 1, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == EX_CONFIG, out.stderr
    assert "configuration error" in out.stderr and "docagents migrate" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_busy_metrics_port_exits_with_the_configuration_code(
    database_url: str, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "manager.cli", "manager"],
            env=manager_env(database_url, 1, tmp_path, METRICS_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert out.returncode == EX_CONFIG, out.stderr
    assert f"METRICS_PORT {port}" in out.stderr


@pytest.mark.parametrize("wrong", ["database", "role"])
def test_a_database_refusing_the_settings_exits_with_the_configuration_code(
    database_url: str, tmp_path: Path, wrong: str
) -> None:
    """A wrong role, password or database name is a configuration error: systemd must not
    restart it in a loop (an unreachable server, by contrast, exits 69 and is retried)."""
    parts = conninfo_to_dict(database_url)
    if wrong == "database":
        parts["dbname"] = "no_such_database"
    else:
        parts["user"] = "no_such_role"
    url = make_conninfo(**parts)  # type: ignore[arg-type]
    out = subprocess.run(
        [sys.executable, "-m", "manager.cli", "manager"],
        env=manager_env(url, 1, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == EX_CONFIG, out.stderr
    assert "the database refused the connection" in out.stderr
    assert f"no_such_{wrong}" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
