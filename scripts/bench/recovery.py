"""Manager CPU at steady state, and recovery after ``kill -9``.

The manager runs as a child process (``python -m manager.cli manager``).

CPU: its CPU use over a window with no agents (the floor), then with
``cpu_agents`` idle agents attached (pings, metrics, writer flushes).

Recovery: with ``recovery_agents`` attached, ``kill -9`` the manager; measure how
long its workers outlive it (invariant 5), then start a new manager (same
``MANAGER_ID``) and measure the time until every wanted document has an active
agent again. Floor: a fresh interpreter importing ``manager.cli``.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import anyio
import psutil

from scripts.bench import floors
from scripts.bench.stack import Stack

MANAGER_ID = "bench-proc"


def _active(stack: Stack) -> int:
    (n,) = stack.query(
        "SELECT count(*) FROM agent_connections WHERE status = 'active' AND manager_id = %s",
        (MANAGER_ID,),
    )[0]
    return int(n)


async def _until(predicate: Any, within: float, step: float = 0.02) -> float:
    started = time.perf_counter()
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 (polling the database)
            await anyio.sleep(step)
    return time.perf_counter() - started


def _cpu_percent(pid: int, window_s: float) -> float:
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(window_s)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return used / window_s * 100


async def run(stack: Stack, cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"floor_manager_import_s": floors.manager_import_s()}
    n_cpu, n_rec = cfg["cpu_agents"], cfg["recovery_agents"]
    env = stack.manager_env(
        MAX_CONCURRENT_AGENTS=str(max(n_cpu, n_rec) + 10),
        MANAGER_ID=MANAGER_ID,
        FLUSH_INTERVAL_S="0.2",  # rows show "active" within 0.2 s of `connected`
    )
    docs = [f"rec-{i}" for i in range(max(n_cpu, n_rec))]
    with stack.manager_process(env, "manager-1.log") as first:
        await _until(lambda: first.poll() is not None or _manager_ready(first.pid), within=60)
        await anyio.sleep(2)
        out["cpu_idle_manager_percent"] = await anyio.to_thread.run_sync(
            _cpu_percent, first.pid, cfg["cpu_window_s"] / 2
        )
        stack.events(docs[:n_cpu], "active")
        await _until(lambda: _active(stack) >= n_cpu, within=120)
        await anyio.sleep(3)
        out["cpu_agents"] = n_cpu
        out["cpu_manager_percent"] = await anyio.to_thread.run_sync(
            _cpu_percent, first.pid, cfg["cpu_window_s"]
        )
        out["cpu_window_s"] = cfg["cpu_window_s"]
        if n_cpu > n_rec:
            stack.events(docs[n_rec:n_cpu], "idle")
            await _until(lambda: _active(stack) <= n_rec, within=60)
        pids = [
            int(pid)
            for (pid,) in stack.query(
                "SELECT agent_pid FROM agent_connections"
                " WHERE status = 'active' AND manager_id = %s",
                (MANAGER_ID,),
            )
        ]
        os.kill(first.pid, signal.SIGKILL)
        killed = time.perf_counter()
        first.wait()
        out["orphans_gone_s"] = await _until(lambda: not any(_alive(p) for p in pids), within=30)
        out["orphans_gone_s"] = time.perf_counter() - killed
    out["recovery_agents"] = len(pids)
    with stack.manager_process(env, "manager-2.log") as second:
        started = time.perf_counter()

        def recovered() -> bool:
            (n,) = stack.query(
                "SELECT count(*) FROM agent_connections WHERE status = 'active'"
                " AND manager_id = %s AND agent_pid <> ALL(%s)",
                (MANAGER_ID, pids),
            )[0]
            return int(n) >= len(pids)

        out["recovery_s"] = await _until(recovered, within=120, step=0.01)
        out["recovery_first_ready_s"] = None
        del started
        stack.events(docs, "idle")
        await _until(lambda: _active(stack) == 0, within=60)
        second.send_signal(signal.SIGTERM)
    return out


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _manager_ready(pid: int) -> bool:
    """The manager's forkserver is up (it has children)."""
    try:
        return bool(psutil.Process(pid).children())
    except psutil.Error:
        return False
