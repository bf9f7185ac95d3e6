"""WorkerProcess and WorkerLauncher with real forkserver processes (stand-in worker target)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import manager_standin
import pytest

from manager.workers.launcher import WorkerLauncher
from manager.workers.process import ExitInfo, WorkerProcess
from worker.config import WorkerSettings
from worker.protocol import Connected, Metrics, WorkerMessage

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def launcher() -> WorkerLauncher:
    launcher = WorkerLauncher(target=manager_standin.main)
    launcher.warm_up()
    return launcher


class Run:
    """Runs one worker in a task group and records what it said."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.messages: list[WorkerMessage] = []
        self.protocol_errors: list[str] = []
        self.connected = anyio.Event()
        self.done = anyio.Event()
        self.exit: ExitInfo | None = None

    def on_message(self, message: WorkerMessage) -> None:
        self.messages.append(message)
        if isinstance(message, Connected):
            self.connected.set()

    def on_protocol_error(self, reason: str) -> None:
        self.protocol_errors.append(reason)
        self.worker.kill()

    async def __call__(self) -> None:
        await self.worker.start()
        self.exit = await self.worker.run(
            on_message=self.on_message, on_protocol_error=self.on_protocol_error
        )
        self.done.set()


async def test_start_connect_ping_stop(launcher: WorkerLauncher) -> None:
    run = Run(launcher.process(WorkerSettings(), "doc-1", "agent-1"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(10):
            await run.connected.wait()
        assert run.worker.pid is not None and run.worker.pid != os.getpid()
        assert run.worker.create_time is not None
        assert run.worker in launcher.workers
        assert await run.worker.ping(2.0)
        assert run.worker.rss_mb() > 0
        with anyio.fail_after(5):
            await run.worker.stop("test", grace=3, kill_grace=1)
            await run.done.wait()
    assert run.exit == ExitInfo(0, "exited with code 0")
    assert run.worker not in launcher.workers
    connected = run.messages[0]
    assert isinstance(connected, Connected) and connected.agent_id == "agent-1"
    assert any(isinstance(m, Metrics) for m in run.messages)


async def test_crash_is_reported_with_exit_code(launcher: WorkerLauncher) -> None:
    run = Run(launcher.process(WorkerSettings(), "crash-1", "agent-2"))
    with anyio.fail_after(10):
        await run()
    assert run.exit == ExitInfo(3, "exited with code 3")


async def test_garbage_on_the_pipe_is_a_protocol_error(launcher: WorkerLauncher) -> None:
    run = Run(launcher.process(WorkerSettings(), "garbage-1", "agent-3"))
    with anyio.fail_after(10):
        await run()
    assert len(run.protocol_errors) == 1
    assert run.exit == ExitInfo(-signal.SIGKILL, "killed by SIGKILL")


async def test_stop_escalates_to_sigkill_when_shutdown_and_sigterm_are_ignored(
    launcher: WorkerLauncher,
) -> None:
    run = Run(launcher.process(WorkerSettings(), "deaf-1", "agent-4"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(10):
            await run.connected.wait()
            await run.worker.stop("test", grace=0.3, kill_grace=0.3)
            await run.done.wait()
    assert run.exit == ExitInfo(-signal.SIGKILL, "killed by SIGKILL")


async def test_stopped_worker_misses_its_ping(launcher: WorkerLauncher) -> None:
    run = Run(launcher.process(WorkerSettings(), "doc-stopped", "agent-5"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(10):
            await run.connected.wait()
        assert run.worker.signal(signal.SIGSTOP)
        assert not await run.worker.ping(0.3)
        assert run.worker.kill()
        with anyio.fail_after(5):
            await run.done.wait()
    assert run.exit == ExitInfo(-signal.SIGKILL, "killed by SIGKILL")


async def test_many_workers_at_once_each_answers_pings(launcher: WorkerLauncher) -> None:
    runs = [Run(launcher.process(WorkerSettings(), f"doc-m{i}", f"agent-m{i}")) for i in range(20)]
    async with anyio.create_task_group() as tg:
        for run in runs:
            tg.start_soon(run)
        with anyio.fail_after(20):
            for run in runs:
                await run.connected.wait()
        results: list[bool] = []

        async def ping(run: Run) -> None:
            results.append(await run.worker.ping(3.0))

        async with anyio.create_task_group() as pings:
            for run in runs:
                pings.start_soon(ping, run)
        assert results == [True] * 20
        assert len({r.worker.pid for r in runs}) == 20
        # The launcher watches its workers itself: multiprocessing's registry, which
        # every Process.start() polls in full, does not hold them.
        registered = {p.pid for p in multiprocessing.active_children()}
        assert registered.isdisjoint(r.worker.pid for r in runs)
        async with anyio.create_task_group() as stops:
            for run in runs:
                stops.start_soon(lambda r=run: r.worker.stop("test", grace=3, kill_grace=1))
    assert all(r.exit == ExitInfo(0, "exited with code 0") for r in runs)


def test_workers_never_see_database_credentials(tmp_path: Path) -> None:
    """Invariant 6: read the environment of a real worker from /proc."""
    script = textwrap.dedent(
        """
        import os, sys, anyio
        import manager_standin
        from manager.workers.launcher import WorkerLauncher
        from worker.config import WorkerSettings
        from worker.protocol import Connected

        async def main():
            launcher = WorkerLauncher(target=manager_standin.main)
            launcher.warm_up()
            worker = launcher.process(WorkerSettings(), "doc-env", "agent-env")
            await worker.start()
            connected = anyio.Event()
            async with anyio.create_task_group() as tg:
                async def run():
                    await worker.run(
                        on_message=lambda m: isinstance(m, Connected) and connected.set(),
                        on_protocol_error=print,
                    )
                tg.start_soon(run)
                await connected.wait()
                environ = open(f"/proc/{worker.pid}/environ", "rb").read()
                names = [k.split(b"=")[0].decode() for k in environ.split(b"\\0") if k]
                print("WORKER_ENV", sorted(names))
                print("MARKER_IN_ENV", b"s3cret-marker" in environ)
                await worker.stop("test", grace=2, kill_grace=1)

        anyio.run(main)
        """
    )
    env = {
        **os.environ,
        "DATABASE_URL": "postgresql://u:s3cret-marker@127.0.0.1/x",
        "SUPABASE_SERVICE_KEY": "s3cret-marker",
        "PGPASSWORD": "s3cret-marker",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path]),
    }
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "MARKER_IN_ENV False" in out.stdout
    (names,) = [line for line in out.stdout.splitlines() if line.startswith("WORKER_ENV")]
    for name in ("DATABASE_URL", "SUPABASE_SERVICE_KEY", "PGPASSWORD"):
        assert f"'{name}'" not in names
    assert "'PATH'" in names  # the environment is there, only the secrets are not


@pytest.mark.parametrize(("preload_llm", "exitcode"), [(True, 10), (False, 11)])
def test_the_template_loads_the_openai_client_only_when_asked(
    preload_llm: bool, exitcode: int
) -> None:
    """In a fresh process: a forkserver's live children keep it from being replaced."""
    script = textwrap.dedent(
        f"""
        import anyio
        import manager_standin
        from manager.workers.launcher import WorkerLauncher
        from worker.config import WorkerSettings

        async def main():
            launcher = WorkerLauncher(
                target=manager_standin.exit_with_openai_loaded,
                warm_pool=0,
                preload_llm={preload_llm},
            )
            launcher.warm_up()
            worker = launcher.process(WorkerSettings(), "doc-llm", "agent-llm")
            await worker.start()
            info = await worker.run(on_message=print, on_protocol_error=print)
            print("EXIT", info.exitcode)

        anyio.run(main)
        """
    )
    env = {**os.environ, "EXTRACTOR": "llm" if not preload_llm else "gazetteer"}
    env.pop("DOCAGENTS_PRELOAD_LLM", None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=Path(manager_standin.__file__).parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"EXIT {exitcode}" in result.stdout, result.stdout + result.stderr
