"""Benchmark: how fast the manager attaches agents, and what an idle worker costs.

Runs on the embedded stack in a temporary DOCAGENTS_HOME: embedded Postgres +
migrations, the real docserver (child process), and the manager in this process
with real forkserver workers (worker.main.process_main). Measures:

1. time from the committed ``document_activity`` INSERT to the worker's
   ``connected`` message (first sync done), for N documents one at a time
   (p50 / p90 / p99 / max);
2. M documents becoming active in one transaction: time until all are connected;
3. PSS / USS per idle worker with those M workers running (psutil
   ``memory_full_info``).

Targets (issue 5): p50 <= 25 ms, p99 <= 100 ms; 100 at once <= 2 s;
PSS <= 25 MiB and USS <= 10 MiB per worker.

    python scripts/bench_attach.py [--sequential 200] [--burst 100]
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx
import psutil
import psycopg

from manager.config import Settings
from manager.daemon import ManagerDaemon
from manager.embedded import EmbeddedPostgres
from manager.processes import WorkerFleet, scrub_secret_environment
from manager.store.migrations import apply_migrations
from manager.store.postgres import PostgresStore
from worker.logs import configure_logging


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        with anyio.fail_after(30):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("docserver exited")
                try:
                    if (await client.get(url, timeout=1)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.05)


async def bench(conninfo: str, home: Path, sequential: int, burst: int) -> None:
    port, token = free_port(), secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "DATABASE_URL": conninfo,
        "DOCAGENTS_HOME": str(home),
        "WS_PORT": str(port),
        "DOCSERVER_AGENT_TOKEN": token,
        "LOG_LEVEL": "WARNING",
    }
    with (home / "docserver.log").open("wb") as log:
        docserver = subprocess.Popen(  # noqa: ASYNC220 (once, before measuring)
            [sys.executable, "-m", "manager.cli", "docserver"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=home,
        )
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz", docserver)
        await run_phases(conninfo, port, token, sequential, burst)
    finally:
        docserver.terminate()
        docserver.wait(10)


async def run_phases(conninfo: str, port: int, token: str, sequential: int, burst: int) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        manager_id="bench",
        max_concurrent_agents=max(burst, 10) + 10,
        ws_port=port,
        docserver_agent_token=token,
        extractor="gazetteer",
        log_level="WARNING",
        stats_interval_s=3600,
        flush_interval_s=0.5,
    )
    connected: dict[str, float] = {}
    arrived = anyio.Event()

    def on_connected(document_id: str, agent_id: str, at: float) -> None:
        nonlocal arrived
        connected[document_id] = at
        arrived.set()

    async def wait_connected(docs: list[str]) -> None:
        nonlocal arrived
        with anyio.fail_after(60):
            while not all(d in connected for d in docs):
                await arrived.wait()
                arrived = anyio.Event()

    fleet = WorkerFleet()
    t0 = time.perf_counter()
    await anyio.to_thread.run_sync(fleet.warm_up)
    store = await PostgresStore.connect(conninfo)
    daemon = ManagerDaemon(settings, store, conninfo, fleet, on_connected=on_connected)
    ready = anyio.Event()
    with psycopg.connect(conninfo, autocommit=True) as db:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: daemon.run(ready=ready.set))
            await ready.wait()
            # Warm-up: the forkserver finishes importing its template on first use.
            db.execute(
                "INSERT INTO document_activity (document_id, event_type) VALUES ('warm', 'active')"
            )
            await wait_connected(["warm"])
            print(
                f"forkserver ready + first worker connected after {time.perf_counter() - t0:.2f} s"
            )
            db.execute(
                "INSERT INTO document_activity (document_id, event_type) VALUES ('warm', 'idle')"
            )

            latencies: list[float] = []
            for i in range(sequential):
                doc = f"seq-{i}"
                db.execute(
                    "INSERT INTO document_activity (document_id, event_type) VALUES (%s, 'active')",
                    (doc,),
                )
                committed = time.perf_counter()
                await wait_connected([doc])
                latencies.append((connected[doc] - committed) * 1000)
                db.execute(
                    "INSERT INTO document_activity (document_id, event_type) VALUES (%s, 'idle')",
                    (doc,),
                )
            with anyio.fail_after(60):
                while daemon.supervisor.running:  # noqa: ASYNC110 (let the agents detach)
                    await anyio.sleep(0.1)
            print(
                f"{sequential} documents one at a time, INSERT commit -> connected: "
                f"p50 {pct(latencies, 50):.1f} ms, p90 {pct(latencies, 90):.1f} ms, "
                f"p99 {pct(latencies, 99):.1f} ms, max {max(latencies):.1f} ms, "
                f"mean {statistics.mean(latencies):.1f} ms"
            )

            docs = [f"burst-{i}" for i in range(burst)]
            with db.transaction(), db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO document_activity (document_id, event_type) VALUES (%s, 'active')",
                    [(d,) for d in docs],
                )
            committed = time.perf_counter()
            await wait_connected(docs)
            spans = sorted((connected[d] - committed) * 1000 for d in docs)
            print(
                f"{burst} documents active at once: all connected after {spans[-1]:.0f} ms "
                f"(first {spans[0]:.0f} ms, median {pct(spans, 50):.0f} ms)"
            )

            await anyio.sleep(3)  # idle: first metrics, settled allocations
            pss, uss, rss = [], [], []
            for worker in list(fleet.workers):
                assert worker.pid is not None
                info = psutil.Process(worker.pid).memory_full_info()
                pss.append(info.pss / 2**20)
                uss.append(info.uss / 2**20)
                rss.append(info.rss / 2**20)
            print(
                f"{len(pss)} idle workers: PSS mean {statistics.mean(pss):.1f} MiB "
                f"(max {max(pss):.1f}), USS mean {statistics.mean(uss):.1f} MiB "
                f"(max {max(uss):.1f}), RSS mean {statistics.mean(rss):.1f} MiB"
            )
            daemon.request_shutdown()
            started = time.perf_counter()
    print(f"shutdown with {burst} agents took {time.perf_counter() - started:.2f} s")
    await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--burst", type=int, default=100)
    args = parser.parse_args()
    configure_logging("console", os.environ.get("BENCH_LOG_LEVEL", "WARNING"))
    scrub_secret_environment()
    with tempfile.TemporaryDirectory(prefix="docagents-bench-") as tmp:
        home = Path(tmp)
        embedded = EmbeddedPostgres(home)
        conninfo = embedded.start()
        try:
            anyio.run(apply_migrations, conninfo)
            anyio.run(bench, conninfo, home, args.sequential, args.burst)
        finally:
            embedded.release()


if __name__ == "__main__":
    main()
