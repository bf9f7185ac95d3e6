"""Worker entry points: a child of the manager (:func:`process_main`) or standalone.

The manager starts :func:`process_main` in a ``multiprocessing`` forkserver
process with its end of a ``Pipe``. The worker's own event loop reads the pipe
(``ping`` -> ``pong``, ``memory`` -> the agent's extraction memory, ``shutdown`` ->
leave the document and exit 0) and exits by itself when the pipe reaches EOF: the
manager died (invariant 5).

Keep imports here to what every worker needs: the manager preloads this module in
its forkserver. The LLM client is imported only by the extractor that uses it.
"""

from __future__ import annotations

import signal
import uuid
from multiprocessing.connection import Connection

import anyio
import structlog
from pycrdt import Doc, YMessageType, create_sync_message, handle_sync_message
from pydantic import SecretStr
from websockets.asyncio.server import ServerConnection, serve

from worker.agent import Agent
from worker.config import WorkerSettings
from worker.logs import configure_logging
from worker.protocol import (
    ErrorReport,
    MemoryHandover,
    Ping,
    Pong,
    ProtocolError,
    Shutdown,
    decode,
)
from worker.reporting import LogReporter, PipeReporter

__all__ = ["process_main", "run_standalone", "warm_up"]

log = structlog.get_logger(__name__)

#: Time allowed to leave the document (null awareness, close) before exiting; keeps the
#: exit after a pipe EOF well inside 2 s.
LEAVE_TIMEOUT_S = 0.5


def process_main(
    settings: WorkerSettings, document_id: str, agent_id: str, conn: Connection
) -> None:
    """Run one agent as a child of the manager, until ``shutdown`` or pipe EOF."""
    configure_logging(settings.log_format, settings.log_level)
    structlog.contextvars.bind_contextvars(document_id=document_id, agent_id=agent_id)
    log.info("worker_started", url=settings.document_url(document_id))
    try:
        anyio.run(_run_with_pipe, settings, document_id, agent_id, conn, backend="asyncio")
    finally:
        conn.close()
    log.info("worker_exited")


async def run_standalone(settings: WorkerSettings, document_id: str) -> None:
    """``docagents worker DOCUMENT_ID``: one agent, reports logged; Ctrl+C stops it."""
    configure_logging(settings.log_format, settings.log_level)
    agent_id = "standalone-" + uuid.uuid4().hex[:12]
    structlog.contextvars.bind_contextvars(document_id=document_id, agent_id=agent_id)
    log.info("worker_started", url=settings.document_url(document_id))
    agent = Agent(settings, document_id, agent_id=agent_id, reporter=LogReporter())
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("worker_stopping", signal=signal.Signals(signum).name)
                break
        await agent.stop(LEAVE_TIMEOUT_S)
        tg.cancel_scope.cancel()
    log.info("worker_exited")


class _Discard:
    def report(self, message: object) -> None:
        pass


async def warm_up(timeout_s: float = 2.0) -> bool:
    """A pooled worker's boot: one whole agent session against a loopback server.

    Run in a fresh fork before it has a document. A fork pays a copy-on-write
    fault on the first write to every page it shares with the template, and the
    websocket handshake, the Y.js sync and the agent's set-up write to many, so a
    fork's first session is slower than its later ones. So the boot
    runs the real :class:`Agent` through connect, sync and leave, against a tiny
    y-websocket server on an ephemeral loopback port in this process; the attach
    that follows finds those pages copied already. Nothing leaves the process, and
    a boot that fails or stalls only leaves the worker less warm. Returns whether
    the session went through.
    """

    async def sync_server(websocket: ServerConnection) -> None:
        doc = Doc()
        await websocket.send(create_sync_message(doc))
        async for message in websocket:
            if isinstance(message, bytes) and message[:1] == bytes([YMessageType.SYNC]):
                reply = handle_sync_message(message[1:], doc)
                if reply is not None:
                    await websocket.send(reply)

    with anyio.move_on_after(timeout_s):
        try:
            async with serve(sync_server, "127.0.0.1", 0, compression=None) as server:
                port = server.sockets[0].getsockname()[1]
                settings = WorkerSettings.model_construct(
                    doc_ws_url=f"ws://127.0.0.1:{port}/{{document_id}}",
                    docserver_agent_token=SecretStr("warm-up"),
                )
                agent = Agent(settings, "warm-up", agent_id="warm-up", reporter=_Discard())
                async with anyio.create_task_group() as tg:
                    await tg.start(agent.run)
                    await agent.synced.wait()
                    await agent.stop(LEAVE_TIMEOUT_S)
                return True
        except Exception:  # a less warm worker is still a worker
            log.debug("warm_up_failed", exc_info=True)
    return False


async def _run_with_pipe(
    settings: WorkerSettings, document_id: str, agent_id: str, conn: Connection
) -> None:
    reporter = PipeReporter(conn)
    agent = Agent(settings, document_id, agent_id=agent_id, reporter=reporter)
    async with anyio.create_task_group() as tg:

        async def work() -> None:
            await agent.run()
            if agent.fenced:  # a newer life holds the document: this worker is done
                log.info("worker_stopping", reason="fenced")
                tg.cancel_scope.cancel()

        # The pipe is served from the start: pings are answered while the agent is
        # still setting up (a slow start is not a hung worker).
        tg.start_soon(work)
        reason = await _serve_pipe(conn, reporter, agent)
        log.info("worker_stopping", reason=reason)
        await agent.stop(LEAVE_TIMEOUT_S)
        tg.cancel_scope.cancel()


async def _serve_pipe(conn: Connection, reporter: PipeReporter, agent: Agent) -> str:
    """Answer the manager until it says ``shutdown`` or goes away; returns why."""
    while True:
        await anyio.wait_readable(conn.fileno())
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return "manager_gone"
        try:
            message = decode(data)
        except ProtocolError as exc:
            log.warning("pipe_message_rejected", error=str(exc)[:300])
            reporter.report(ErrorReport(message="rejected a malformed pipe message"))
            continue
        if isinstance(message, Ping):
            reporter.report(Pong(seq=message.seq))
        elif isinstance(message, MemoryHandover):
            agent.hand_over(message)
        elif isinstance(message, Shutdown):
            log.info("shutdown_requested", reason=message.reason)
            return "shutdown"
        else:
            log.warning("pipe_message_unexpected", type=message.type)
