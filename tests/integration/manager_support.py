"""Running a real ManagerDaemon inside a test (real Postgres, real worker processes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from manager.config import Settings
from manager.daemon.driver import ManagerDaemon
from manager.store.postgres import PostgresStore
from manager.workers.launcher import WorkerLauncher


@asynccontextmanager
async def running_manager(
    settings: Settings,
    url: str,
    launcher: WorkerLauncher | None = None,
    *,
    ready_within: float = 30.0,
    wrap_store: Callable[[PostgresStore], Any] | None = None,
    **daemon_args: Any,
) -> AsyncIterator[ManagerDaemon]:
    """A daemon that is ready on entry and has stopped cleanly (exit 0) on exit.

    Without ``launcher``, a launcher of real workers (``worker.main``) is started and
    killed afterwards; a given launcher is left running for the caller.
    ``wrap_store`` may put a fault-injecting wrapper around the real store.
    """
    own_launcher = launcher is None
    if launcher is None:
        launcher = WorkerLauncher()
        await anyio.to_thread.run_sync(launcher.warm_up)
    store = await PostgresStore.connect(url)
    used = store if wrap_store is None else wrap_store(store)
    daemon = ManagerDaemon(settings, used, url, launcher, **daemon_args)
    ready, finished = anyio.Event(), anyio.Event()
    codes: list[int] = []
    try:
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                codes.append(await daemon.run(ready=ready.set))
                finished.set()

            tg.start_soon(run)
            with anyio.fail_after(ready_within):
                await ready.wait()
            yield daemon
            daemon.request_shutdown()
            with anyio.fail_after(15):
                await finished.wait()
        assert codes == [0]
    finally:
        if own_launcher:
            launcher.kill_all()
        await store.aclose()


def type_chars(run: Any, text: str) -> None:
    """Append ``text`` to an XmlText one character per transaction, like a person typing."""
    offset = len(run)
    for ch in text:
        run.insert(offset, ch)
        offset += len(ch.encode())


def start_manager(env: dict[str, str], tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    """``docagents manager`` as a child process, its output in ``tmp_path/<name>.log``."""
    with (tmp_path / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "manager.cli", "manager"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
