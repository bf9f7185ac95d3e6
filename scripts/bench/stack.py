"""The embedded stack the scenarios run against, and small measuring helpers.

:class:`Stack`: embedded Postgres (migrated) + the real docserver (a child process,
``python -m manager.cli docserver``) in one temporary ``DOCAGENTS_HOME``.
:meth:`Stack.manager` runs the real manager (``ManagerDaemon`` with a forkserver
``WorkerLauncher`` and real workers) in this process, so the time a worker's
``connected`` message arrives is taken where it arrives;
:meth:`Stack.manager_process` runs ``python -m manager.cli manager`` as a child
(for ``kill -9`` and for its CPU figures).
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import psycopg

from manager.config import Settings
from manager.daemon.driver import ManagerDaemon
from manager.embedded import EmbeddedPostgres
from manager.store.migrations import apply_migrations
from manager.store.postgres import PostgresStore
from manager.workers.launcher import WorkerLauncher

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from docserver_support import AGENT_TOKEN, DocserverProcess  # noqa: E402

__all__ = ["AGENT_TOKEN", "ManagerRun", "Stack", "pct", "raise_fd_limit", "summary"]


def pct(values: Iterable[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
        "max": max(values) if values else float("nan"),
        "mean": statistics.mean(values) if values else float("nan"),
    }


def raise_fd_limit(wanted: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ManagerRun:
    """An in-process manager: the daemon, and when each document's worker connected."""

    def __init__(self, daemon: ManagerDaemon, launcher: WorkerLauncher) -> None:
        self.daemon = daemon
        self.launcher = launcher
        self.connected: dict[str, float] = {}
        self._arrived = anyio.Event()

    def on_connected(self, document_id: str, agent_id: str, at: float) -> None:
        self.connected[document_id] = at
        self._arrived.set()

    async def wait_connected(self, docs: Iterable[str], within: float = 120.0) -> None:
        docs = list(docs)
        with anyio.fail_after(within):
            while not all(d in self.connected for d in docs):
                await self._arrived.wait()
                self._arrived = anyio.Event()

    async def wait_running(self, count: int, within: float = 60.0) -> None:
        with anyio.fail_after(within):
            while self.daemon.supervisor.lives != count:  # noqa: ASYNC110 (polling a figure)
                await anyio.sleep(0.05)

    def worker_pids(self) -> list[int]:
        return [w.pid for w in list(self.launcher.workers) if w.pid is not None]


class Stack:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.embedded = EmbeddedPostgres(home / "pg")
        self.conninfo = ""
        self.docserver: DocserverProcess | None = None
        self.db: psycopg.Connection[Any] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, home: Path, *, idle_timeout_ms: int = 600_000) -> AsyncIterator[Stack]:
        stack = cls(home)
        stack.conninfo = await anyio.to_thread.run_sync(stack.embedded.start)
        try:
            await apply_migrations(stack.conninfo)
            stack.docserver = DocserverProcess(
                home / "docserver",
                stack.conninfo,
                idle_timeout_ms=idle_timeout_ms,
                LOG_LEVEL="WARNING",
            )
            await stack.docserver.start()
            try:
                with psycopg.connect(stack.conninfo, autocommit=True) as db:
                    stack.db = db
                    yield stack
            finally:
                await stack.docserver.stop()
        finally:
            await anyio.to_thread.run_sync(stack.embedded.release)

    # --- the database ------------------------------------------------------------

    def events(self, docs: Iterable[str], event_type: str) -> float:
        """Insert one event per document in one transaction; returns the commit time."""
        assert self.db is not None
        rows = [(d, event_type) for d in docs]
        with self.db.transaction(), self.db.cursor() as cur:
            cur.executemany(
                "INSERT INTO document_activity (document_id, event_type) VALUES (%s, %s)", rows
            )
        return time.perf_counter()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self.db is not None
        return self.db.execute(sql, params).fetchall()

    def reset_documents(self) -> None:
        """Every known document idle, so a new manager starts with nothing wanted."""
        assert self.db is not None
        self.db.execute(
            "INSERT INTO document_activity (document_id, event_type)"
            " SELECT DISTINCT document_id, 'idle' FROM document_activity"
        )

    # --- the manager ---------------------------------------------------------------

    def settings(self, **overrides: Any) -> Settings:
        assert self.docserver is not None
        values: dict[str, Any] = {
            "manager_id": "bench",
            "max_concurrent_agents": 50,
            "ws_port": self.docserver.port,
            "docserver_agent_token": AGENT_TOKEN,
            "extractor": "gazetteer",
            "log_level": "WARNING",
            "stats_interval_s": 3600,
            "min_residency_s": 0,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    @contextlib.asynccontextmanager
    async def manager(self, settings: Settings, **launcher_args: Any) -> AsyncIterator[ManagerRun]:
        """The real manager in this process. Its template preloads the OpenAI client
        only when asked (``preload_llm=True``), as a manager with ``EXTRACTOR=llm``."""
        launcher_args.setdefault("preload_llm", settings.resolved_extractor() == "llm")
        launcher = WorkerLauncher(**launcher_args)
        await anyio.to_thread.run_sync(launcher.warm_up)
        store = await PostgresStore.connect(self.conninfo)
        run: ManagerRun | None = None

        def on_connected(document_id: str, agent_id: str, at: float) -> None:
            assert run is not None
            run.on_connected(document_id, agent_id, at)

        daemon = ManagerDaemon(settings, store, self.conninfo, launcher, on_connected=on_connected)
        run = ManagerRun(daemon, launcher)
        ready = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: daemon.run(ready=ready.set))
                await ready.wait()
                yield run
                daemon.request_shutdown()
        finally:
            launcher.kill_all()
            await store.aclose()

    def manager_env(self, **env: str) -> dict[str, str]:
        assert self.docserver is not None
        inherited = {k: v for k, v in os.environ.items() if k != "DOCAGENTS_PRELOAD_LLM"}
        return {
            **inherited,
            "DATABASE_URL": self.conninfo,
            "DOCAGENTS_HOME": str(self.home / "manager"),
            "WS_PORT": str(self.docserver.port),
            "DOCSERVER_AGENT_TOKEN": AGENT_TOKEN,
            "EXTRACTOR": "gazetteer",
            "MANAGER_ID": "bench-proc",
            "IDLE_TIMEOUT_MS": "3600000",
            "MIN_RESIDENCY_S": "0",
            "STATS_INTERVAL_S": "3600",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            **env,
        }

    @contextlib.contextmanager
    def manager_process(
        self, env: dict[str, str], log_name: str
    ) -> Iterator[subprocess.Popen[bytes]]:
        (self.home / "manager").mkdir(exist_ok=True)
        with (self.home / log_name).open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "manager.cli", "manager"],
                env=env,
                cwd=self.home / "manager",
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def memory_of(pids: Iterable[int]) -> dict[str, float]:
    """Mean RSS/PSS/USS (MiB) of the given processes."""
    rss, pss, uss = [], [], []
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            continue
        rss.append(info.rss / 2**20)
        pss.append(info.pss / 2**20)
        uss.append(info.uss / 2**20)
    return {
        "n": len(pss),
        "rss_mib": statistics.mean(rss) if rss else float("nan"),
        "pss_mib": statistics.mean(pss) if pss else float("nan"),
        "uss_mib": statistics.mean(uss) if uss else float("nan"),
        "pss_max_mib": max(pss) if pss else float("nan"),
        "uss_max_mib": max(uss) if uss else float("nan"),
    }
