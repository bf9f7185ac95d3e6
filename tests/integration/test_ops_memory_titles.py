"""What an operator sees of real workers: PSS figures that match the kernel's, process titles.

Real docserver process, the manager in-process with real forkserver workers
(gazetteer), pycrdt clients as the people, real Postgres. The kernel's own
figure, ``Pss:`` of ``/proc/<pid>/smaps_rollup``, is the reference for
``docagents agents`` (per worker, reported by the worker) and for the stats
box (the average from the database, the manager's own sum over its workers).
"""

from __future__ import annotations

import json
import multiprocessing.forkserver
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import psutil
import psycopg
import pytest
from docserver_support import AGENT_TOKEN, DocserverProcess
from manager_support import running_manager
from psycopg.rows import dict_row
from ywebsocket_server import HumanClient

from manager.config import Settings
from manager.ops.proctitle import worker_title
from manager.ops.stats import render_stats_box

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DOCUMENTS = ("trip-lisbon", "notes-2026", "a-document-with-a-rather-long-name-for-ps")


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def kernel_pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no Pss line for {pid}")


def ps_args(pid: int) -> str:
    return subprocess.run(
        ["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=True
    ).stdout.strip()


def within(value: float, reference: float, fraction: float = 0.2) -> bool:
    return abs(value - reference) <= fraction * reference


@pytest.fixture
async def stack(
    database_url: str, db: psycopg.Connection[dict[str, Any]], tmp_path: Path
) -> AsyncIterator[Any]:
    docserver = DocserverProcess(tmp_path / "docserver", database_url, idle_timeout_ms=10_000)
    await docserver.start()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=None,
        supabase_url=None,
        supabase_service_key=None,
        manager_id="ops-manager",
        ws_port=docserver.port,
        docserver_agent_token=AGENT_TOKEN,
        extractor="gazetteer",
        metrics_interval_s=0.2,
        flush_interval_s=0.1,
        stats_interval_s=3600.0,
    )
    try:
        async with running_manager(settings, database_url) as daemon, AsyncExitStack() as people:
            for document_id in DOCUMENTS:
                await people.enter_async_context(
                    HumanClient(docserver.ws_url(document_id)).connected()
                )
            with anyio.fail_after(30):
                while (  # noqa: ASYNC110 (polling the database)
                    db.execute(
                        "SELECT count(*) AS n FROM agent_connections"
                        " WHERE status = 'active' AND pss_mb IS NOT NULL"
                    ).fetchone()["n"]
                    < len(DOCUMENTS)
                ):
                    await anyio.sleep(0.05)
            yield daemon
    finally:
        await docserver.stop()


async def test_agents_and_stats_box_show_pss_close_to_the_kernels(
    stack: Any, database_url: str, db: psycopg.Connection[dict[str, Any]]
) -> None:
    daemon = stack
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "warning"}
    # A fresh report from every worker, then the table and the kernel side by side.
    await anyio.sleep(0.5)
    await daemon.writer.flush()
    listed = subprocess.run(  # noqa: ASYNC221 (the CLI is what an operator runs)
        [sys.executable, "-m", "manager.cli", "agents", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    agents = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(a["document_id"] for a in agents) == sorted(DOCUMENTS)
    kernel = {a["agent_pid"]: kernel_pss_mb(a["agent_pid"]) for a in agents}
    for agent in agents:
        reference = kernel[agent["agent_pid"]]
        assert within(agent["pss_mb"], reference), (agent, reference)
        # RSS counts the template's shared pages in full: well above PSS.
        assert agent["memory_mb"] > agent["pss_mb"]

    table = subprocess.run(  # noqa: ASYNC221
        [sys.executable, "-m", "manager.cli", "agents"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert "PSS MiB" in table[0]
    column = table[0].index("PSS MiB")
    for line in table[1:-1]:
        pid = int(line.split()[2])
        shown = float(line[column:].split()[0])
        assert within(shown, kernel[pid]), (line, kernel[pid])

    # The stats box: the average PSS from the database, the manager's own sum.
    system = await daemon.store.system_stats()
    mine = await daemon.reports.manager_stats()
    pids = [life.worker.pid for life in daemon.lives.values() if life.worker is not None]
    assert sorted(pids) == sorted(kernel)
    total = sum(kernel_pss_mb(pid) for pid in pids)
    assert mine.worker_memory_mb is not None and within(mine.worker_memory_mb, total)
    assert system.avg_memory_mb is not None
    assert within(system.avg_memory_mb, total / len(pids))
    box = render_stats_box(system, mine)
    assert f"{system.avg_memory_mb:.1f} MiB" in box
    assert f"{mine.worker_memory_mb:.1f} MiB" in box
    assert "Avg memory (PSS):" in box and "Worker memory (PSS):" in box


async def test_ps_names_every_docagents_process(stack: Any) -> None:
    daemon = stack
    for life in daemon.lives.values():
        assert life.worker is not None and life.worker.pid is not None
        args = ps_args(life.worker.pid)
        assert args == worker_title(life.document_id, life.agent_id), args
        if len(life.document_id) <= 40:
            assert args == f"docagents worker {life.document_id} ({life.agent_id})"
        else:
            assert args.startswith(f"docagents worker {life.document_id[:19]}…")
    forkserver = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    assert ps_args(forkserver) == "docagents forkserver"
    # The warm pool: the forkserver's children that are no agent's worker, once the
    # pool is full (the refill thread then starts nothing new). Launchers of earlier
    # tests in this process share the forkserver: their pooled workers count too.
    launcher = daemon.launcher
    with anyio.fail_after(30):
        while launcher.pooled < launcher.warm_pool:  # noqa: ASYNC110 (refilled in a thread)
            await anyio.sleep(0.05)
    workers = {life.worker.pid for life in daemon.lives.values() if life.worker is not None}
    pooled = [p.pid for p in psutil.Process(forkserver).children() if p.pid not in workers]
    assert len(pooled) >= launcher.warm_pool
    for pid in pooled:
        assert ps_args(pid) == "docagents warm"
