"""Manager CPU at steady state, and recovery after ``kill -9``.

The manager runs as a child process (``python -m manager.cli manager``).

CPU: its CPU use over a window with no agents (the floor), then with
``cpu_agents`` idle agents attached (pings, metrics, writer flushes).

Recovery: with ``recovery_agents`` attached, ``kill -9`` the manager; measure how
long its workers outlive it (invariant 5), then start a new manager (same
``MANAGER_ID``) and measure the time from its start until every wanted document
has an active agent again. Trials chain: the recovered manager is the next one
killed (``recovery_trials`` in all; the median is reported, every trial beside
it, as this machine's speed drifts by tens of percent between runs). Floor: a
fresh interpreter importing ``manager.cli.commands``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
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
        await _until(lambda: _active(stack) == n_rec, within=60)
        trials, orphans = await _recoveries(stack, env, first, cfg["recovery_trials"])
    out["recovery_agents"] = n_rec
    out["recovery_trials_s"] = trials
    out["recovery_s"] = statistics.median(trials)
    out["orphans_gone_trials_s"] = orphans
    out["orphans_gone_s"] = max(orphans)
    return out


async def _recoveries(
    stack: Stack, env: dict[str, str], first: subprocess.Popen[bytes], n: int
) -> tuple[list[float], list[float]]:
    """kill -9 the running manager, start another, time it; ``n`` times in a chain."""
    victim = first
    trials: list[float] = []
    orphans: list[float] = []
    with contextlib.ExitStack() as managers:
        for trial in range(n):
            pids = _live_pids(stack)
            os.kill(victim.pid, signal.SIGKILL)
            killed = time.perf_counter()
            victim.wait()
            await _until(lambda pids=pids: not any(_alive(p) for p in pids), within=30)
            orphans.append(time.perf_counter() - killed)
            successor = managers.enter_context(
                stack.manager_process(env, f"manager-{trial + 2}.log")
            )

            def recovered(pids: list[int] = pids) -> bool:
                (count,) = stack.query(
                    "SELECT count(*) FROM agent_connections WHERE status = 'active'"
                    " AND manager_id = %s AND agent_pid <> ALL(%s)",
                    (MANAGER_ID, pids),
                )[0]
                return int(count) >= len(pids)

            trials.append(await _until(recovered, within=120, step=0.01))
            victim = successor
        stack.events(_documents(stack), "idle")
        await _until(lambda: _active(stack) == 0, within=60)
        victim.send_signal(signal.SIGTERM)
    return trials, orphans


def _live_pids(stack: Stack) -> list[int]:
    return [
        int(pid)
        for (pid,) in stack.query(
            "SELECT agent_pid FROM agent_connections WHERE status = 'active' AND manager_id = %s",
            (MANAGER_ID,),
        )
    ]


def _documents(stack: Stack) -> list[str]:
    return [
        doc
        for (doc,) in stack.query(
            "SELECT DISTINCT document_id FROM agent_connections WHERE manager_id = %s",
            (MANAGER_ID,),
        )
    ]


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
