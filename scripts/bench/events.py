"""Event throughput: activity events per second the manager applies, and its lag.

The manager runs in this process with a small cap; events are written by a
thread with ``COPY`` in transactions of ``batch`` rows, as fast as it can.

- no-op repeats: 'active' again and again for documents that already run;
- real transitions: 'active'/'idle' alternating for many documents that are not
  running (the cap is full, residency high, so they queue and leave the queue:
  wanted-state changes without process churn).

Applied = the supervisor's ``events_applied`` counter. Lag = the listener's
``lag_s`` (event timestamp -> delivery), sampled every 20 ms, and the time from
the last commit until everything is applied. Floor: a bare reader (one
connection, ``id > cursor ORDER BY id`` in batches) reading the same rows.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import psycopg

from scripts.bench.stack import ManagerRun, Stack


def _copy(conninfo: str, rows: list[tuple[str, str]], batch: int) -> list[float]:
    commits = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for start in range(0, len(rows), batch):
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy("COPY document_activity (document_id, event_type) FROM STDIN") as cp,
            ):
                for row in rows[start : start + batch]:
                    cp.write_row(row)
            commits.append(time.perf_counter())
    return commits


async def _measure(
    stack: Stack, run: ManagerRun, rows: list[tuple[str, str]], batch: int
) -> dict[str, Any]:
    sup = run.daemon.supervisor
    before = sup.events_applied
    lags: list[float] = []
    done = anyio.Event()

    async def sample() -> None:
        while not done.is_set():
            listener = run.daemon.listener
            lag = None if listener is None else listener.lag_s
            if lag is not None:
                lags.append(lag)
            await anyio.sleep(0.02)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sample)
        commits = await anyio.to_thread.run_sync(_copy, stack.conninfo, rows, batch)
        with anyio.fail_after(120):
            while sup.events_applied - before < len(rows):  # noqa: ASYNC110
                await anyio.sleep(0.005)
        finished = time.perf_counter()
        done.set()
    written_s = commits[-1] - started
    return {
        "events": len(rows),
        "offered_per_s": len(rows) / written_s,
        "applied_per_s": len(rows) / (finished - started),
        "lag_max_s": max(lags) if lags else None,
        "lag_mean_s": sum(lags) / len(lags) if lags else None,
        "last_commit_to_applied_ms": (finished - commits[-1]) * 1000,
    }


def _bare_read(conninfo: str, cursor: int, count: int, batch: int) -> float:
    started = time.perf_counter()
    seen = 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while seen < count:
            rows = conn.execute(
                "SELECT id, document_id, event_type, user_count, timestamp FROM document_activity"
                " WHERE id > %s ORDER BY id LIMIT %s",
                (cursor, batch),
            ).fetchall()
            if not rows:
                break
            cursor = rows[-1][0]
            seen += len(rows)
    return seen / (time.perf_counter() - started)


async def run(stack: Stack, cfg: dict[str, Any]) -> dict[str, Any]:
    n = cfg["events"]
    running = [f"ev-run-{i}" for i in range(10)]
    settings = stack.settings(max_concurrent_agents=10, min_residency_s=3600)
    out: dict[str, Any] = {}
    async with stack.manager(settings) as run_:
        stack.events(running, "active")
        await run_.wait_connected(running)
        (cursor,) = stack.query("SELECT max(id) FROM document_activity")[0]
        repeats = [(running[i % len(running)], "active") for i in range(n)]
        out["noop_repeats"] = await _measure(stack, run_, repeats, cfg["event_batch"])
        queued = [f"ev-q-{i}" for i in range(max(1, n // 20))]
        transitions = [
            (queued[(i // 2) % len(queued)], "active" if i % 2 == 0 else "idle") for i in range(n)
        ]
        out["transitions"] = await _measure(stack, run_, transitions, cfg["event_batch"])
        out["transitions"]["documents"] = len(queued)
        stack.events(running, "idle")
        await run_.wait_running(0)
    out["floor_bare_reader_per_s"] = await anyio.to_thread.run_sync(
        _bare_read, stack.conninfo, cursor, n, 1000
    )
    return out
