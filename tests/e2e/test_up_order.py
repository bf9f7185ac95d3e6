"""`docagents up` starts its agents only once its docserver listens.

A document still active in the database when `up` starts gets its agent during
the manager's recovery, which used to come before the docserver listened: the
agent's first connection was refused and logged as a warning. Now nothing is
logged at warning level on a clean start, and the agent attaches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from docserver_support import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def until(predicate: Callable[[], Any], within: float = 60.0) -> Any:
    with anyio.fail_after(within):
        while not (value := predicate()):  # noqa: ASYNC110 (polling a log file)
            await anyio.sleep(0.1)
    return value


def log_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


async def test_up_with_an_active_document_logs_no_refused_connection(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DATABASE_URL"))}
    env.update(
        DOCAGENTS_HOME=str(home),
        WS_PORT=str(port),
        EXTRACTOR="gazetteer",
        STATS_INTERVAL_S="3600",
        IDLE_TIMEOUT_MS="60000",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
        MANAGER_ID="up-order",
    )
    cli = [sys.executable, "-m", "manager.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True, timeout=120)  # noqa: ASYNC221
    seeded = subprocess.run(  # noqa: ASYNC221
        [
            *cli,
            "psql",
            "-X",
            "-q",
            "-c",
            "INSERT INTO document_activity (document_id, event_type, user_count)"
            " VALUES ('left-open', 'active', 1)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stderr
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(  # noqa: ASYNC220
            [*cli, "up"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        await until(
            lambda: (
                up.poll() is not None
                or any(r.get("event") == "worker_connected" for r in log_records(log_path))
            )
        )
        assert up.poll() is None, log_path.read_text()
        os.killpg(up.pid, signal.SIGINT)
        await until(lambda: up.poll() is not None, within=30)
        assert up.returncode == 0, log_path.read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    records = log_records(log_path)
    events = [r["event"] for r in records]
    assert events.index("up_docserver_ready") < events.index("worker_started")
    assert events.index("docserver_listening") < events.index("worker_started")
    loud = [r for r in records if r.get("level") in ("warning", "error", "critical")]
    assert loud == [], loud
