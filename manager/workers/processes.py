"""Worker processes: the forkserver fleet and one :class:`WorkerProcess` per agent life.

Workers are started with ``multiprocessing``'s ``forkserver`` context, from a
template process that preloaded :mod:`manager.workers.preload` (the worker modules
and the gazetteer), one duplex ``Pipe`` each. The manager's process never forks.

The manager's end of each pipe is non-blocking and read only when the event loop
says it is readable, one framed message at a time (``worker.protocol.decode``);
anything that is not one valid message (garbage, an oversized or truncated
frame) is a :class:`~worker.protocol.ProtocolError` for that worker alone.

A worker's exit is seen through the process sentinel, so a crash, a kill or a
clean exit all end :meth:`WorkerProcess.run` with an :class:`ExitInfo`.

With :attr:`WorkerFleet.memory` set (a :class:`~manager.supervise.memory.MemoryKeeper`),
each worker's run also hands it the document's extraction memory, and its
``extraction_report`` messages go to the keeper instead of ``on_message``.

Warm pool: the fleet keeps ``warm_pool`` workers started ahead of need
(:func:`manager.workers.entry.run_pooled`: forked, booted, waiting on their pipe).
Starting a worker takes one from the pool and sends it its assignment (the target,
the settings, the document) over the pipe, so the fork and the child's boot are off
the attach path; a background thread refills the pool. Pooled workers count
against nothing (not in :attr:`WorkerFleet.workers`, no database row) and exit at
EOF on their pipe like any worker, so a dead manager leaves none behind. With an
empty pool a worker is started the same way, its assignment sent right after the
fork.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import context as mp_context
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing import process as mp_process
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import anyio
import psutil
import structlog

from manager.workers.forkserver import (
    DEFAULT_PRELOAD,
    PRELOAD_LLM_VAR,
    ensure_template,
    scrub_secret_environment,
)
from worker.config import WorkerSettings
from worker.protocol import (
    MAX_MESSAGE_BYTES,
    ExtractionReport,
    MemoryHandover,
    Message,
    Ping,
    Pong,
    ProtocolError,
    Shutdown,
    WorkerMessage,
    decode,
    encode,
)

if TYPE_CHECKING:
    from manager.supervise.memory import MemoryKeeper

__all__ = [
    "DEFAULT_PRELOAD",
    "ExitInfo",
    "WorkerFleet",
    "WorkerProcess",
    "describe_exit",
    "scrub_secret_environment",
]

log = structlog.get_logger(__name__)

#: Workers kept started and booted ahead of need (see the module docstring).
DEFAULT_WARM_POOL = 4
#: After a failed pool start, wait this long before the next try.
_POOL_RETRY_S = 1.0
#: How long the refill waits at most for a pooled worker to finish its boot.
_BOOT_WAIT_S = 1.0


def _wait_booted(pid: int | None) -> None:
    """Wait until a pooled worker sleeps (booted, blocked on its pipe), at most a second."""
    if pid is None:
        return
    deadline = time.monotonic() + _BOOT_WAIT_S
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_SLEEPING:
                return
        except psutil.Error:
            return
        time.sleep(0.005)


#: The pool refills only after this long without a start: during a burst the
#: forkserver and the CPU serve the workers that are wanted now.
_POOL_QUIET_S = 0.25

Target = Callable[[WorkerSettings, str, str, Connection], None]


@dataclass(frozen=True, slots=True)
class ExitInfo:
    exitcode: int | None
    description: str


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class _TemplatePopen(popen_forkserver.Popen):  # type: ignore[misc]
    """A forkserver ``Popen`` whose child does not re-import the manager's ``__main__``.

    ``multiprocessing`` makes every child import the parent's main module
    (``manager.cli.commands`` with its database and embedded-Postgres modules): ~100 ms and
    tens of MiB of private memory per worker, for nothing a worker uses. This is
    ``popen_forkserver.Popen._launch`` (CPython 3.11-3.13) without that step.
    """

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_name", None)
        prep_data.pop("init_main_from_path", None)
        buf = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            mp_context.set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:  # noqa: PTH123 (a file descriptor)
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _TemplateProcess(mp_context.ForkServerProcess):  # type: ignore[misc]
    """A forkserver process of the fleet, kept out of ``multiprocessing``'s child registry.

    ``Process.start()`` first polls every child in that registry
    (``multiprocessing.process._cleanup``, one ``select`` per live child): with
    hundreds of workers that made every start cost O(workers) and a burst O(n²)
    (about 45,000 polls for 300 starts). The fleet watches its workers itself
    (their sentinels, :meth:`WorkerProcess.run`) and kills them on shutdown
    (:meth:`WorkerFleet.kill_all`); a worker whose manager died leaves at EOF on
    its pipe. So the registry has nothing to do for them.
    """

    @staticmethod
    def _Popen(process_obj: Any) -> _TemplatePopen:
        return _TemplatePopen(process_obj)

    def start(self) -> None:
        super().start()
        mp_process._children.discard(self)


class WorkerFleet:
    """The forkserver template and the set of live workers of this manager."""

    def __init__(
        self,
        *,
        target: Target | None = None,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        warm_pool: int = DEFAULT_WARM_POOL,
        preload_llm: bool | None = None,
    ) -> None:
        """``preload_llm``: load the OpenAI client into the template (True), or not
        (False); None leaves it to the environment (see :mod:`manager.workers.preload`).
        """
        if target is None:
            from manager.workers.entry import run_worker

            target = run_worker
        if warm_pool < 0:
            raise ValueError("warm_pool must be >= 0")
        self.target = target
        self.preload = preload
        self.warm_pool = warm_pool
        self.preload_llm = preload_llm
        self._ctx = multiprocessing.get_context("forkserver")
        self.workers: set[WorkerProcess] = set()
        #: Hands each life its document's extraction memory and stores its reports.
        self.memory: MemoryKeeper | None = None
        self._pool: list[tuple[Any, Connection]] = []
        self._pool_changed = threading.Condition()
        self._pool_closed = False
        self._last_demand = 0.0
        self._refiller: threading.Thread | None = None
        #: Starts served from the pool / started cold (for benchmarks and stats).
        self.pool_hits = 0
        self.pool_misses = 0

    def warm_up(self) -> None:
        """Start the forkserver now (blocking: it imports the preload modules).

        The forkserver inherits ``os.environ`` as it is now: the secrets are removed
        first, whatever the caller did.
        """
        removed = scrub_secret_environment()
        if removed:
            log.warning("secret_environment_removed_before_forkserver", names=removed)
        if self.preload_llm is not None:
            # The template reads it from the environment it inherits.
            os.environ[PRELOAD_LLM_VAR] = "1" if self.preload_llm else "0"
        # Kept when `docagents manager` started it early (manager.workers.forkserver.start_early);
        # one started by other code without our template, or with another, is replaced.
        if ensure_template(self.preload) == "replaced":
            log.info("forkserver_restarted_with_template")
        with self._pool_changed:
            if self.warm_pool and self._refiller is None and not self._pool_closed:
                self._refiller = threading.Thread(
                    target=self._refill, name="docagents-warm-pool", daemon=True
                )
                self._refiller.start()

    def close_pool(self) -> None:
        """Stop refilling and let the pooled (unassigned) workers go (idempotent)."""
        with self._pool_changed:
            self._pool_closed = True
            pooled, self._pool = self._pool, []
            self._pool_changed.notify_all()
        for proc, conn in pooled:
            conn.close()  # EOF: the pooled worker exits by itself
            if proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)

    @property
    def pooled(self) -> int:
        return len(self._pool)

    def pooled_pids(self) -> list[int]:
        with self._pool_changed:
            return [proc.pid for proc, _ in self._pool if proc.pid is not None]

    def _spawn(self, warm: bool = True) -> tuple[Any, Connection]:
        """Fork one worker that waits for its assignment (blocking: the handshake).

        ``warm``: for the pool (it boots while it waits); else its assignment follows.
        """
        from manager.workers.entry import run_pooled

        parent, child = self._ctx.Pipe(duplex=True)
        proc = _TemplateProcess(
            target=run_pooled, args=(child, warm), name="docagents-worker", daemon=True
        )
        try:
            proc.start()
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        return proc, parent

    def _take(self) -> tuple[Any, Connection] | None:
        """A live pooled worker, or None; wakes the refill thread."""
        with self._pool_changed:
            while self._pool:
                proc, conn = self._pool.pop(0)
                self._pool_changed.notify_all()
                if proc.is_alive():
                    return proc, conn
                conn.close()
        return None

    def _note_miss(self) -> None:
        """The pool ran dry: a burst; the refill waits until it is over."""
        with self._pool_changed:
            self._last_demand = time.monotonic()

    def _refill(self) -> None:
        while True:
            with self._pool_changed:
                while not self._pool_closed:
                    if len(self._pool) >= self.warm_pool:
                        self._pool_changed.wait()
                        continue
                    quiet_for = time.monotonic() - self._last_demand
                    if quiet_for >= _POOL_QUIET_S:
                        break
                    self._pool_changed.wait(_POOL_QUIET_S - quiet_for)
                if self._pool_closed:
                    return
            try:
                item = self._spawn()
            except (OSError, ValueError, RuntimeError, EOFError) as exc:
                log.warning("warm_pool_start_failed", error=repr(exc))
                time.sleep(_POOL_RETRY_S)
                continue
            _wait_booted(item[0].pid)  # one boot at a time: a spike would slow real starts
            with self._pool_changed:
                if not self._pool_closed:
                    self._pool.append(item)
                    continue
            item[1].close()
            return

    def process(self, settings: WorkerSettings, document_id: str, agent_id: str) -> WorkerProcess:
        return WorkerProcess(self, settings, document_id, agent_id)

    def kill_all(self) -> int:
        """SIGKILL every live worker at once (second signal, failing shutdown, the end).

        The warm pool is closed too: the manager is going down.
        """
        self.close_pool()
        killed = 0
        for worker in list(self.workers):
            if worker.kill():
                killed += 1
        return killed

    @property
    def context(self) -> Any:
        return self._ctx


class WorkerProcess:
    """One worker: start it, read its pipe, ping it, stop or kill it. One life only."""

    def __init__(
        self, fleet: WorkerFleet, settings: WorkerSettings, document_id: str, agent_id: str
    ) -> None:
        self.fleet = fleet
        self.settings = settings
        self.document_id = document_id
        self.agent_id = agent_id
        self.pid: int | None = None
        self.create_time: float | None = None
        self._proc: Any = None
        self._start_called = False
        self._conn: Connection | None = None
        self._seq = itertools.count(1)
        self._pongs: dict[int, anyio.Event] = {}
        self._exited = anyio.Event()
        self._running = False
        self.exit: ExitInfo | None = None

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.document_id!r} agent={self.agent_id} pid={self.pid}>"

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    async def start(self) -> None:
        """Take a pooled worker (or fork one, in a thread) and send it its assignment."""
        if self._start_called:
            raise RuntimeError("a WorkerProcess starts once")
        self._start_called = True
        fleet = self.fleet
        assignment = pickle.dumps(
            (fleet.target, self.settings, self.document_id, self.agent_id),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        pooled = fleet._take()
        if pooled is not None:
            proc, parent = pooled
            try:
                parent.send_bytes(assignment)
            except OSError:  # it died since: start one cold
                parent.close()
                pooled = None
            else:
                fleet.pool_hits += 1
        if pooled is None:
            fleet._note_miss()
            proc, parent = await anyio.to_thread.run_sync(fleet._spawn, False)
            fleet.pool_misses += 1
            with contextlib.suppress(OSError):  # it died at once: run() reports the exit
                parent.send_bytes(assignment)
        self._proc = proc
        os.set_blocking(parent.fileno(), False)
        self._conn = parent
        self.pid = proc.pid
        fleet.workers.add(self)
        try:
            self.create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            self.create_time = None  # already gone: run() will see the exit

    async def run(
        self,
        *,
        on_message: Callable[[WorkerMessage], None],
        on_protocol_error: Callable[[str], None],
    ) -> ExitInfo:
        """Deliver the worker's messages until it exits; return how it exited."""
        if self._proc is None or self._conn is None:
            raise RuntimeError("start() first")
        if self._running:
            raise RuntimeError("run() is already running")
        self._running = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read_pipe, on_message, on_protocol_error)
                memory = self.fleet.memory
                if memory is not None:
                    tg.start_soon(memory.hand_over, self)
                await anyio.wait_readable(self._proc.sentinel)
                tg.cancel_scope.cancel()
            # Messages written just before the exit are still in the pipe.
            self._drain(on_message)
            exitcode = self._proc.exitcode
        finally:
            if self._proc.exitcode is None:
                # Cancelled with the worker still alive: the manager is going down
                # hard; take the worker with it (no orphans).
                self.kill()
            self._close()
        self.exit = ExitInfo(exitcode, describe_exit(exitcode))
        return self.exit

    def send(self, message: Message) -> bool:
        """Send without blocking; False if the pipe is full, broken or closed."""
        if self._conn is None or self._conn.closed:
            return False
        try:
            self._conn.send_bytes(encode(message))
        except OSError:
            return False
        return True

    async def send_when_ready(self, message: Message) -> bool:
        """Send once the pipe has room (a large message must not meet a full pipe:
        a partial write would break the stream); False if the worker is gone."""
        conn = self._conn
        if conn is None or conn.closed or self.exited:
            return False
        try:
            with anyio.move_on_after(10):
                await anyio.wait_writable(conn.fileno())
                return self.send(message)
        except (OSError, ValueError):
            return False
        return False

    async def ping(self, within_s: float) -> bool:
        """Ping and wait for the matching pong, at most ``within_s`` seconds."""
        seq = next(self._seq)
        answered = self._pongs[seq] = anyio.Event()
        try:
            if not self.send(Ping(seq=seq)):
                return False
            with anyio.move_on_after(within_s):
                await answered.wait()
            return answered.is_set()
        finally:
            self._pongs.pop(seq, None)

    async def stop(self, reason: str, *, grace: float, kill_grace: float) -> None:
        """``shutdown``, wait ``grace``; SIGTERM, wait ``kill_grace``; SIGKILL; wait."""
        if self.exited:
            return
        self.send(Shutdown(reason=reason))
        with anyio.move_on_after(grace):
            await self._exited.wait()
            return
        log.warning("worker_ignored_shutdown", document_id=self.document_id, pid=self.pid)
        self.signal(signal.SIGTERM)
        with anyio.move_on_after(kill_grace):
            await self._exited.wait()
            return
        log.warning("worker_ignored_sigterm", document_id=self.document_id, pid=self.pid)
        self.kill()
        await self._exited.wait()

    async def wait(self) -> None:
        await self._exited.wait()

    def signal(self, signum: int) -> bool:
        if self.pid is None or self.exited:
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> bool:
        return self.signal(signal.SIGKILL)

    def rss_mb(self) -> float:
        if self.pid is None or self.exited:
            return 0.0
        try:
            return psutil.Process(self.pid).memory_info().rss / 2**20
        except psutil.Error:
            return 0.0

    # --- internals -----------------------------------------------------------------

    async def _read_pipe(
        self,
        on_message: Callable[[WorkerMessage], None],
        on_protocol_error: Callable[[str], None],
    ) -> None:
        assert self._conn is not None
        fd = self._conn.fileno()
        while True:
            await anyio.wait_readable(fd)
            try:
                more = self._read_available(on_message)
            except ProtocolError as exc:
                log.warning(
                    "worker_protocol_error",
                    document_id=self.document_id,
                    agent_id=self.agent_id,
                    error=str(exc)[:300],
                )
                on_protocol_error(f"protocol error: {str(exc)[:200]}")
                return  # the stream cannot be trusted any more; the exit ends run()
            if not more:
                return  # EOF: the worker closed its end; its exit follows

    def _read_available(self, on_message: Callable[[WorkerMessage], None]) -> bool:
        """Read every complete message now available; False at EOF."""
        conn = self._conn
        assert conn is not None
        while True:
            try:
                data = conn.recv_bytes(MAX_MESSAGE_BYTES)
            except (EOFError, ConnectionResetError):
                return False
            except BlockingIOError as exc:
                raise ProtocolError("truncated message on the pipe") from exc
            except OSError as exc:  # "bad message length": oversized or garbage header
                raise ProtocolError(f"bad frame: {exc}") from exc
            message = decode(data)
            if isinstance(message, Pong):
                event = self._pongs.get(message.seq)
                if event is not None:
                    event.set()
            elif isinstance(message, (Ping, Shutdown, MemoryHandover)):
                raise ProtocolError(f"a worker sent {message.type!r}")
            elif isinstance(message, ExtractionReport) and self.fleet.memory is not None:
                self.fleet.memory.take(self.document_id, message)
            else:
                on_message(message)
            if not conn.poll(0):
                return True

    def _drain(self, on_message: Callable[[WorkerMessage], None]) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            return
        try:
            if conn.poll(0):
                self._read_available(on_message)
        except (ProtocolError, OSError) as exc:
            log.debug("worker_pipe_drain_stopped", document_id=self.document_id, error=str(exc))

    def _close(self) -> None:
        self.fleet.workers.discard(self)
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None and self._proc.exitcode is not None:
            self._proc.close()
        self._exited.set()
