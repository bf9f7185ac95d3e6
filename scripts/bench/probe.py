"""Profiling probe (not part of the report): phase timestamps of one attach.

A worker target that wraps the real one and appends ``phase perf_counter`` lines
to ``$BENCH_PROBE_DIR/<pid>`` (perf_counter is CLOCK_MONOTONIC: comparable
across processes).
"""

from __future__ import annotations

import os
import time
from multiprocessing.connection import Connection
from pathlib import Path

from worker.config import WorkerSettings

PROBE_DIR = Path(os.environ.get("BENCH_PROBE_DIR", "/tmp/docagents-probe"))


def mark(phase: str) -> None:
    with (PROBE_DIR / str(os.getpid())).open("a") as f:
        f.write(f"{phase} {time.perf_counter()}\n")


def probed_worker(
    settings: WorkerSettings, document_id: str, agent_id: str, conn: Connection
) -> None:
    mark("child_start")
    prof = None
    if os.environ.get("BENCH_PROBE_PROFILE"):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    import websockets.asyncio.client as wsc

    import worker.connection as wc
    from manager.workers.entry import run_worker

    real_connect = wsc.connect

    class Connect:
        def __init__(self, *a, **k):  # type: ignore[no-untyped-def]
            self._c = real_connect(*a, **k)

        def __await__(self):  # type: ignore[no-untyped-def]
            mark("ws_connect_begin")
            ws = yield from self._c.__await__()
            mark("ws_connected")
            return ws

    wc.connect = Connect  # type: ignore[assignment]
    real_wait = wc.DocumentConnection._wait_synced

    async def wait_synced(self, provider):  # type: ignore[no-untyped-def]
        await provider.synced.wait()
        mark("synced")
        if prof is not None:
            prof.disable()
            prof.dump_stats(str(PROBE_DIR / f"{os.getpid()}.prof"))
        await real_wait(self, provider)

    wc.DocumentConnection._wait_synced = wait_synced  # type: ignore[method-assign]
    run_worker(settings, document_id, agent_id, conn)
