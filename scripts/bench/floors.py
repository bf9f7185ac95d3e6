"""Floors: what the scenarios could not beat, measured in the same run.

- a bare forkserver child's time to its first message (the same forkserver and
  template as the workers, a child that only writes one message on its pipe);
  and for the bursts, N such children started at once: the time until the last
  message (forks, page faults and scheduling on this machine at that moment, with
  none of the agent's work);
- a bare Python process's PSS / USS (``python -c`` waiting on stdin);
- a fresh interpreter importing ``manager.cli.commands`` (the fixed part of a manager restart).

And :func:`cpu_reference_ms`, the machine's speed at the start, before each scenario
and at the end of a run: a VM's speed drifts (by up to half within minutes on the
project's machine), and figures of two runs compare only next to it.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from multiprocessing import connection
from multiprocessing.connection import Connection

import anyio
import psutil

from manager.workers.forkserver import TemplateProcess
from scripts.bench.stack import summary


def _start_bare_child() -> tuple[TemplateProcess, Connection]:
    """A forkserver child of the workers' template that only sends one message.

    The template must be running (the manager under test started it).
    """
    parent, child = multiprocessing.Pipe(duplex=True)
    proc = TemplateProcess(target=child.send_bytes, args=(b"hello",), daemon=True)
    proc.start()
    child.close()
    return proc, parent


def forkserver_first_message(samples: int = 30) -> dict[str, float]:
    """ms from ``Process.start()`` to the first message read by the parent (blocking)."""
    times: list[float] = []
    for _ in range(samples):
        started = time.perf_counter()
        proc, parent = _start_bare_child()
        parent.recv_bytes()
        times.append((time.perf_counter() - started) * 1000)
        proc.join(5)
        parent.close()
    return summary(times)


def forkserver_burst_ms(n: int) -> float:
    """ms from the first ``Process.start()`` until all ``n`` bare children (started one
    after the other, as fast as the forkserver forks) sent their first message."""
    parents: list[Connection] = []
    procs: list[TemplateProcess] = []
    started = time.perf_counter()
    try:
        for _ in range(n):
            proc, parent = _start_bare_child()
            procs.append(proc)
            parents.append(parent)
        waiting = set(parents)
        while waiting:
            ready = connection.wait(list(waiting), timeout=30)
            if not ready:
                raise TimeoutError(f"{len(waiting)} of {n} bare children sent nothing in 30 s")
            for conn in ready:
                conn.recv_bytes()  # type: ignore[union-attr]
                waiting.discard(conn)  # type: ignore[arg-type]
        return (time.perf_counter() - started) * 1000
    finally:
        for proc in procs:
            proc.join(5)
        for parent in parents:
            parent.close()


async def forkserver_burst_floor(n: int) -> float:
    return await anyio.to_thread.run_sync(forkserver_burst_ms, n)


def bare_python_memory() -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        time.sleep(0.5)
        info = psutil.Process(proc.pid).memory_full_info()
        return {
            "rss_mib": info.rss / 2**20,
            "pss_mib": info.pss / 2**20,
            "uss_mib": info.uss / 2**20,
        }
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(5)


def manager_import_s(samples: int = 3) -> float:
    best = float("inf")
    for _ in range(samples):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import manager.cli.commands"], check=True)
        best = min(best, time.perf_counter() - started)
    return best


async def forkserver_floor() -> dict[str, float]:
    return await anyio.to_thread.run_sync(forkserver_first_message)


def cpu_reference_ms(rounds: int = 5) -> float:
    """Best of ``rounds`` of a fixed pure-Python loop (about 0.1 s), in ms."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i & 7
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)
