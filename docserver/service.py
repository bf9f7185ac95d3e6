"""Running the docserver: document store, rooms, presence, activity writer, uvicorn.

:func:`run` is the whole service as one ``async def`` in a task group; it
returns after SIGINT/SIGTERM (when ``handle_signals``) or when cancelled. On a
signal, uvicorn closes every websocket (1012, "service restart"), the queued
activity rows get a few seconds to reach the database, and the document store
writes what it still holds. Departures caused by our own shutdown are not
turned into 'idle' rows: the clients will reconnect, and if they don't, the next
start gives the document its 'idle' after the grace.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import structlog
import uvicorn
from anyio.abc import TaskGroup, TaskStatus
from pydantic import SecretStr

from docserver.activity import ActivitySink
from docserver.activity.postgres import PostgresActivityWriter
from docserver.app import DocserverApp
from docserver.auth import unauthenticated_bind_problem
from docserver.errors import (
    DocserverConfigError,
    DocserverError,
    ListenFailed,
    sole_docserver_error,
)
from docserver.gatekeeper import Gatekeeper, build_gatekeeper
from docserver.listener import guarded_protocols, parse_networks
from docserver.presence import Action, PresenceTracker, Record, StartGrace
from docserver.rooms import DocumentRooms
from docserver.settings import DocserverSettings
from docserver.store import DocumentStore

__all__ = ["PresenceService", "run"]

log = structlog.get_logger(__name__)

_FLUSH_ON_EXIT_S = 5.0
_UVICORN_STOP_S = 10.0


class PresenceService:
    """Drives :class:`PresenceTracker`: rows go to the writer, graces become tasks."""

    def __init__(
        self, tracker: PresenceTracker, writer: ActivitySink, task_group: TaskGroup
    ) -> None:
        self._tracker = tracker
        self._writer = writer
        self._task_group = task_group
        self.closing = False

    def human_joined(self, document_id: str) -> None:
        if not self.closing:
            self._apply(self._tracker.human_joined(document_id, anyio.current_time()))

    def human_edited(self, document_id: str) -> None:
        if not self.closing:
            self._apply(self._tracker.human_edited(document_id, anyio.current_time()))

    def agent_joined(self, document_id: str) -> None:
        self._tracker.agent_joined(document_id)

    def agent_left(self, document_id: str) -> None:
        self._tracker.agent_left(document_id)

    def human_left(self, document_id: str) -> None:
        if not self.closing:
            self._apply(self._tracker.human_left(document_id))

    def active_at_start(self, document_ids: list[str]) -> None:
        self._apply(self._tracker.recovered_active(document_ids))

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Record):
                log.info(
                    "activity",
                    document_id=action.document_id,
                    event_type=action.event_type,
                    user_count=action.user_count,
                    reason=action.reason,
                )
                self._writer.record(
                    action.document_id, action.event_type, action.user_count, reason=action.reason
                )
            elif isinstance(action, StartGrace):
                self._task_group.start_soon(self._grace, action)

    async def _grace(self, action: StartGrace) -> None:
        await anyio.sleep(action.delay_s)
        if not self.closing:
            self._apply(self._tracker.grace_expired(action.document_id, action.generation))


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (ours stops it and then flushes)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


#: Whole request head (request line + headers); each line is bounded separately.
_MAX_REQUEST_HEAD_BYTES = 64 * 1024


def _uvicorn_config(app: DocserverApp, settings: DocserverSettings) -> uvicorn.Config:
    http, ws = guarded_protocols(
        max_line=settings.docserver_max_request_line_bytes,
        max_head=_MAX_REQUEST_HEAD_BYTES,
        handshake_timeout_s=settings.docserver_handshake_timeout_s,
        max_per_address=settings.docserver_max_connections_per_address,
        exempt=parse_networks(settings.docserver_connection_limit_exempt),
    )
    return uvicorn.Config(
        app,
        host=settings.docserver_host,
        port=settings.ws_port,
        http=http,
        ws=ws,
        ws_max_size=settings.docserver_max_message_bytes,
        lifespan="off",
        log_config=None,
        access_log=False,
        ws_ping_interval=settings.docserver_ping_interval_s,
        ws_ping_timeout=settings.docserver_ping_timeout_s,
        timeout_graceful_shutdown=3,
        server_header=False,
    )


async def run(
    settings: DocserverSettings,
    *,
    database_url: str | None = None,
    writer: ActivitySink | None = None,
    supabase_url: str | None = None,
    supabase_key: SecretStr | None = None,
    handle_signals: bool = True,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until a signal (or cancellation); ``task_status.started(port)`` once listening.

    Activity rows go to ``writer`` (default: a :class:`PostgresActivityWriter` on
    ``database_url``). Raises :class:`~docserver.errors.DocserverConfigError` before
    anything starts when the configuration cannot work (no authentication on a public
    address, a missing JWT secret, an unwritable DOCAGENTS_HOME), and any other
    :class:`~docserver.errors.DocserverError` that stops it (the port is taken, the
    document store cannot be opened, Supabase refuses the key) as itself, not
    wrapped in the task group's exception group.
    """
    problem = unauthenticated_bind_problem(
        settings.docserver_host,
        settings.docserver_auth,
        allow_remote=settings.docserver_allow_unauthenticated,
    )
    if problem is not None:
        raise DocserverConfigError(problem)
    gatekeeper = build_gatekeeper(
        settings,
        database_url=database_url,
        supabase_url=supabase_url,
        supabase_key=supabase_key,
    )
    _check_writable(settings.store_path.parent)
    if writer is None:
        if not database_url:
            raise DocserverConfigError("the docserver needs a database_url or an activity writer")
        writer = PostgresActivityWriter(database_url, max_buffer=settings.docserver_activity_buffer)
    failure: DocserverError | None = None
    try:
        await _serve_until_stopped(
            settings, writer, gatekeeper, handle_signals=handle_signals, task_status=task_status
        )
    except BaseExceptionGroup as group:
        failure = sole_docserver_error(group)
        if failure is None:
            raise
    if failure is not None:
        raise failure  # outside the handler: the error keeps its own cause, not the group
    log.info("docserver_stopped")


async def _serve_until_stopped(
    settings: DocserverSettings,
    writer: ActivitySink,
    gatekeeper: Gatekeeper,
    *,
    handle_signals: bool,
    task_status: TaskStatus[int],
) -> None:
    async with (
        DocumentStore.open(settings.store_path) as store,
        anyio.create_task_group() as tg,
    ):
        rooms = DocumentRooms(
            store,
            unload_after_s=settings.docserver_room_unload_after_s,
            max_document_bytes=settings.docserver_max_document_bytes,
        )
        store.on_recovered = rooms.store_recovered
        await tg.start(rooms.run)
        await gatekeeper.open()
        presence = PresenceService(
            PresenceTracker(
                grace_s=settings.grace_s,
                record_joins=settings.docserver_record_joins,
                edit_interval_s=settings.docserver_edit_activity_interval_s,
            ),
            writer,
            tg,
        )
        await tg.start(functools.partial(writer.run, on_active_documents=presence.active_at_start))
        app = DocserverApp(
            settings,
            activity=writer,
            rooms=rooms,
            presence=presence,
            gatekeeper=gatekeeper,
            store=store,
        )
        server = _Server(_uvicorn_config(app, settings))
        if handle_signals:
            tg.start_soon(_stop_on_signal, server)
        served = anyio.Event()
        tg.start_soon(_serve, server, served)
        try:
            # uvicorn exposes only a flag for "listening"
            while not server.started and not served.is_set():  # noqa: ASYNC110
                await anyio.sleep(0.02)
            if server.started:
                port = server.servers[0].sockets[0].getsockname()[1]
                log.info("docserver_listening", host=settings.docserver_host, port=port)
                task_status.started(port)
            await served.wait()
        finally:
            # also on cancellation: uvicorn stops through its flag (closing its sockets)
            server.should_exit = True
            with anyio.move_on_after(_UVICORN_STOP_S, shield=True):
                await served.wait()
            server.force_exit = True
            presence.closing = True
            with anyio.move_on_after(_FLUSH_ON_EXIT_S, shield=True) as flush:
                await writer.wait_drained()
            if flush.cancelled_caught:
                log.error("activity_rows_lost_at_exit", pending=writer.pending)
            with anyio.CancelScope(shield=True):
                await gatekeeper.close()
            tg.cancel_scope.cancel()


def _check_writable(directory: Path) -> None:
    """A read-only or foreign DOCAGENTS_HOME is a configuration error (exit 78), not a crash."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise DocserverConfigError(
            f"the document store directory {directory} is not writable "
            f"({exc.strerror or exc}); check DOCAGENTS_HOME"
        ) from exc


async def _stop_on_signal(server: uvicorn.Server) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("docserver_stopping", signal=signal.Signals(signum).name)
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True


async def _serve(server: uvicorn.Server, served: anyio.Event) -> None:
    try:
        with anyio.CancelScope(shield=True):  # stopped by should_exit, see run()
            await server.serve()
    except SystemExit as exc:  # uvicorn exits when it cannot listen
        config = server.config
        raise ListenFailed(f"cannot listen on {config.host}:{config.port}") from exc
    finally:
        served.set()
