"""One worker process per agent life: start it, read its pipe, ping it, stop or kill it.

The manager's end of each pipe is non-blocking and read only when the event loop
says it is readable, one framed message at a time (``worker.protocol.decode``);
anything that is not one valid message (garbage, an oversized or truncated
frame) is a :class:`~worker.protocol.ProtocolError` for that worker alone.

A worker's exit is seen through the process sentinel, so a crash, a kill or a
clean exit all end :meth:`WorkerProcess.run` with an :class:`ExitInfo`.
"""

from __future__ import annotations

import itertools
import os
import pickle
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

import anyio
import psutil
import structlog

from manager.workers.forkserver import TemplateProcess
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
    from manager.workers.launcher import WorkerLauncher

__all__ = ["ExitInfo", "WorkerProcess", "describe_exit"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How a worker ended: its exit code (negative: the signal) and that in words."""

    exitcode: int | None
    description: str


def describe_exit(exitcode: int | None) -> str:
    """``exited with code 3``, ``killed by SIGKILL``, or ``exit status unknown``."""
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class WorkerProcess:
    """One worker: start it, read its pipe, ping it, stop or kill it. One life only."""

    def __init__(
        self, launcher: WorkerLauncher, settings: WorkerSettings, document_id: str, agent_id: str
    ) -> None:
        self.launcher = launcher
        self.settings = settings
        self.document_id = document_id
        self.agent_id = agent_id
        self.pid: int | None = None
        self.create_time: float | None = None
        self._proc: TemplateProcess | None = None
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
        """Take a pooled worker (or fork one) and send it its assignment."""
        if self._start_called:
            raise RuntimeError("a WorkerProcess starts once")
        self._start_called = True
        launcher = self.launcher
        assignment = pickle.dumps(
            (launcher.target, self.settings, self.document_id, self.agent_id),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        proc, parent = await launcher.launch(assignment)
        self._proc = proc
        os.set_blocking(parent.fileno(), False)
        self._conn = parent
        self.pid = proc.pid
        launcher.workers.add(self)
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
                memory = self.launcher.memory
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
            elif isinstance(message, ExtractionReport) and self.launcher.memory is not None:
                self.launcher.memory.take(self.document_id, message)
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
        self.launcher.workers.discard(self)
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None and self._proc.exitcode is not None:
            self._proc.close()
        self._exited.set()
