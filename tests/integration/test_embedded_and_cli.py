"""The embedded Postgres and the foundation CLI commands, as a user runs them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from manager.embedded import EmbeddedPostgres


def _cli(*args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manager.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if psutil.pid_exists(pid) else None


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "ready":
            return
    raise AssertionError("holder process exited before it was ready")


@pytest.fixture
def home_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(DOCAGENTS_HOME=str(tmp_path / "home"), LOG_LEVEL="warning")
    return env


def test_migrate_and_stats_on_embedded_default(home_env: dict[str, str], tmp_path: Path) -> None:
    first = _cli("migrate", env=home_env)
    assert first.returncode == 0, first.stderr
    assert "applied migrations: 0001" in first.stdout
    again = _cli("migrate", env=home_env)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    stats = _cli("stats", "--json", env=home_env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["system"]["total_agents"] == 0
    box = _cli("stats", env=home_env)
    assert "Live now (connecting or active)" in box.stdout and "All-time totals" in box.stdout
    assert "Agents:" in box.stdout and "Avg memory (PSS):" in box.stdout
    # The last holder let go: no postmaster is left running.
    assert _postmaster_pid(tmp_path / "home" / "pgdata") is None


def test_migrate_stats_psql_against_database_url(
    empty_database_url: str, home_env: dict[str, str]
) -> None:
    env = {**home_env, "DATABASE_URL": empty_database_url}
    assert "applied migrations" in _cli("migrate", env=env).stdout
    with __import__("psycopg").connect(empty_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO agent_connections (document_id, agent_id, manager_id, status,"
            " llm_calls_count) VALUES ('d', 'a', 'm', 'active', 4)"
        )
    out = _cli("stats", "--json", env=env)
    assert out.returncode == 0, out.stderr
    system = json.loads(out.stdout)["system"]
    assert (system["active_agents"], system["total_llm_calls"]) == (1, 4)
    psql = subprocess.run(
        [
            sys.executable,
            "-m",
            "manager.cli",
            "psql",
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT count(*) FROM agent_connections",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.strip() == "1"
    # The embedded server was never started: DATABASE_URL wins.
    assert not (Path(home_env["DOCAGENTS_HOME"]) / "pgdata").exists()


def test_psql_missing_is_a_clear_error(empty_database_url: str, home_env: dict[str, str]) -> None:
    env = {**home_env, "DATABASE_URL": empty_database_url, "PATH": "/nonexistent"}
    out = _cli("psql", env=env)
    assert out.returncode == 1
    assert "psql is not installed" in out.stderr


def test_unreachable_database_is_a_clear_error(home_env: dict[str, str]) -> None:
    secret = "hunter2-very-secret"
    env = {**home_env, "DATABASE_URL": f"postgresql://u:{secret}@127.0.0.1:1/nodb"}
    out = _cli("stats", env=env)
    assert out.returncode == 1
    assert "cannot connect to the database" in out.stderr
    assert secret not in out.stderr + out.stdout


def test_invalid_setting_is_a_clear_error(home_env: dict[str, str]) -> None:
    out = _cli("stats", env={**home_env, "MAX_CONCURRENT_AGENTS": "lots"})
    assert out.returncode == 78  # EX_CONFIG: systemd does not restart it in a loop
    assert "MAX_CONCURRENT_AGENTS" in out.stderr


@contextlib.contextmanager
def _holder(home: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the embedded Postgres (ready on entry, SIGKILLed on exit)."""
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from manager.embedded import EmbeddedPostgres
        EmbeddedPostgres(Path({str(home)!r})).start()
        print("ready", flush=True)
        time.sleep(600)
    """)
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            _wait_ready(holder)
            yield holder
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)


def test_sigkilled_holder_does_not_keep_postgres_alive(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with _holder(home):
        assert _postmaster_pid(home / "pgdata") is not None
    # The server outlives the killed holder; a later start attaches and works...
    embedded = EmbeddedPostgres(home)
    url = embedded.start()
    import psycopg

    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # ...and as the last live holder, letting go stops it.
    embedded.release()
    assert _postmaster_pid(home / "pgdata") is None


def test_down_stops_a_server_held_by_someone_else(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with _holder(home):
        env = {**os.environ, "DOCAGENTS_HOME": str(home), "LOG_LEVEL": "warning"}
        env.pop("DATABASE_URL", None)
        out = _cli("down", env=env)
        assert out.returncode == 0, out.stderr
        assert "stopped" in out.stdout
        assert _postmaster_pid(home / "pgdata") is None


@pytest.mark.skipif(
    not any(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
    reason="no system Postgres binaries on this machine",
)
def test_system_binaries_fallback() -> None:
    # Postgres runs as an unprivileged user when we are root: its directory
    # must be reachable by that user (pytest's tmp_path is private to root).
    import shutil
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="docagents-sys-", dir="/tmp"))
    tmp_path.chmod(0o755)
    embedded = EmbeddedPostgres(tmp_path / "home", engine="system")
    url = embedded.start()
    try:
        import psycopg

        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert embedded.engine == "system"
    finally:
        embedded.release()
    assert _postmaster_pid(tmp_path / "home" / "pgdata") is None
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_start_again_in_the_same_process_after_stop_now(tmp_path: Path) -> None:
    import psycopg

    home = tmp_path / "home"
    first = EmbeddedPostgres(home)
    first.start()
    assert first.stop_now()
    second = EmbeddedPostgres(home)
    url = second.start()
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        second.release()
    assert _postmaster_pid(home / "pgdata") is None
