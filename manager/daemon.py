"""The manager daemon: the thin async driver around the :class:`Supervisor`.

One task group holds everything: the activity listener, the store writer, one
task per agent life (claim -> start -> read the pipe, ping, stop), a ticker for
backoffs and residencies, the stats loop, and the signal loop. Decisions are the
supervisor's; this module only executes them and reports back what happened.

Start-up: recover the lives a previous run of this manager left behind, read the
latest event of every document, attach the wanted ones (most recent first, up to
the cap), then follow the event cursor.

Shutdown (SIGTERM/SIGINT): stop reading events, detach every worker concurrently
within ``shutdown_timeout_s`` (SIGKILL what is left), end their rows, flush, return
0. A second signal kills every worker at once and returns 1. SIGUSR1 prints the
stats box.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
import anyio.abc
import structlog

from manager.activity import ActivityListener
from manager.config import Settings
from manager.errors import ConfigurationError, StoreError
from manager.processes import Target, WorkerFleet, WorkerProcess
from manager.recovery import recover
from manager.stats import ManagerStats, render_stats_box
from manager.store.base import ActivityEvent, AgentRow, ClaimResult, Store
from manager.store.postgres import PostgresStore
from manager.supervisor import Action, EndLife, Kill, RestartPolicy, Start, Stop, Supervisor
from manager.writer import StoreWriter
from worker.protocol import (
    Activity,
    Connected,
    Error,
    LlmCall,
    LocationMarked,
    Metrics,
    WorkerMessage,
)

__all__ = ["ManagerDaemon", "run_manager"]

log = structlog.get_logger(__name__)

#: After a failed shutdown, how long SIGKILLed workers get to be reaped.
_REAP_TIMEOUT_S = 3.0
#: Claims in flight at once (the store's pool has 4 connections).
_CONCURRENT_CLAIMS = 3

OnConnected = Callable[[str, str, float], None]


def _now() -> float:
    return time.monotonic()


@dataclass(eq=False)
class _Life:
    """One agent life as the driver sees it."""

    document_id: str
    agent_id: str
    worker: WorkerProcess | None = None
    stop_reason: str | None = None
    kill: bool = False
    stop_requested: anyio.Event = field(default_factory=anyio.Event)

    def request_stop(self, reason: str, *, kill: bool) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.kill = self.kill or kill
        if kill and self.worker is not None:
            self.worker.kill()
        self.stop_requested.set()


class ManagerDaemon:
    """Executes the supervisor's decisions against real processes and the store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        conninfo: str,
        fleet: WorkerFleet,
        *,
        on_connected: OnConnected | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.conninfo = conninfo
        self.fleet = fleet
        self.host = socket.gethostname()
        self.worker_settings = settings.worker_settings()
        self.supervisor = Supervisor(
            settings.max_concurrent_agents,
            min_residency_s=settings.min_residency_s,
            policy=RestartPolicy(
                backoff_min_s=settings.restart_backoff_min_s,
                backoff_max_s=settings.restart_backoff_max_s,
                stable_s=settings.restart_stable_s,
                crash_loop_restarts=settings.crash_loop_restarts,
                crash_loop_window_s=settings.crash_loop_window_s,
                claim_retry_s=settings.claim_retry_s,
            ),
            new_agent_id=lambda: "agent-" + uuid.uuid4().hex,
        )
        self.writer = StoreWriter(store, flush_interval_s=settings.flush_interval_s)
        self.listener: ActivityListener | None = None
        self.lives: dict[str, _Life] = {}
        self._on_connected = on_connected
        self._tg: anyio.abc.TaskGroup | None = None
        self._wake = anyio.Event()
        self._all_stopped = anyio.Event()
        self._running = False
        #: Claims waiting for a database connection queue here, not in the pool
        #: (a burst of 100 documents would otherwise time out on the pool).
        self._claim_limiter = anyio.CapacityLimiter(_CONCURRENT_CLAIMS)
        self._requests_in, self._requests = anyio.create_memory_object_stream[int](64)

    # --- the whole run ---------------------------------------------------------------

    async def run(self, *, ready: Callable[[], None] | None = None) -> int:
        if self._running:
            raise RuntimeError("ManagerDaemon.run() called twice")
        self._running = True
        settings = self.settings
        with (
            self._requests_in,
            self._requests,
            anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals,
        ):
            ended, latest, cursor = await self._read_start_state()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._forward_signals, signals)
                log.info(
                    "manager_starting",
                    manager_id=settings.manager_id,
                    capacity=settings.max_concurrent_agents,
                    stale_lives_ended=len(ended),
                    documents_known=len(latest),
                    cursor=cursor,
                )
                self.listener = ActivityListener(
                    self.conninfo,
                    self.store,
                    cursor=cursor,
                    poll_interval_s=settings.poll_interval_s,
                )
                await tg.start(self.writer.run)
                self._dispatch(self.supervisor.load(latest, _now()))
                events_scope = anyio.CancelScope()
                await tg.start(self._follow_events, events_scope)
                tg.start_soon(self._ticker)
                tg.start_soon(self._stats_loop)
                log.info("manager_ready", manager_id=settings.manager_id, attached=len(self.lives))
                if ready is not None:
                    ready()
                async for signum in self._requests:
                    if signum == signal.SIGUSR1:
                        await self.print_stats()
                        continue
                    log.info("manager_stopping", signal=signal.Signals(signum).name)
                    break
                events_scope.cancel()
                code = await self._shutdown()
                tg.cancel_scope.cancel()  # the writer's final flush runs on cancel
        log.info("manager_stopped", exit_code=code)
        return code

    def request_shutdown(self) -> None:
        """Stop as on SIGTERM (a second call: as on a second signal)."""
        with contextlib.suppress(anyio.ClosedResourceError, anyio.WouldBlock):
            self._requests_in.send_nowait(signal.SIGTERM)

    async def _forward_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            await self._requests_in.send(signum)

    async def _read_start_state(self) -> tuple[list[AgentRow], list[ActivityEvent], int]:
        try:
            ended = await recover(self.store, self.settings.manager_id)
            latest, cursor = await self.store.latest_events()
        except StoreError as exc:
            if "does not exist" in str(exc):
                raise ConfigurationError(
                    "the database has no docagents schema: run `docagents migrate` first"
                ) from exc
            raise
        return ended, latest, cursor

    async def _follow_events(
        self,
        scope: anyio.CancelScope,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        assert self.listener is not None
        with scope:
            await self.listener.run(self._on_events, task_status=task_status)

    async def _on_events(self, events: Sequence[ActivityEvent]) -> None:
        self._dispatch(self.supervisor.apply_events(events, _now()))

    async def _shutdown(self) -> int:
        self._dispatch(self.supervisor.shutdown())
        self._check_all_stopped()
        code = 0
        async with anyio.create_task_group() as tg:

            async def second_signal() -> None:
                nonlocal code
                async for signum in self._requests:
                    if signum == signal.SIGUSR1:
                        continue
                    log.warning("manager_killing_workers", signal=signal.Signals(signum).name)
                    code = 1
                    self.fleet.kill_all()
                    return

            tg.start_soon(second_signal)
            with anyio.move_on_after(self.settings.shutdown_timeout_s):
                await self._all_stopped.wait()
            if not self._all_stopped.is_set():
                killed = self.fleet.kill_all()
                log.warning("shutdown_timeout_workers_killed", killed=killed)
                with anyio.move_on_after(_REAP_TIMEOUT_S):
                    await self._all_stopped.wait()
            tg.cancel_scope.cancel()
        with anyio.move_on_after(self.settings.shutdown_timeout_s / 2):
            try:
                await self.writer.flush()
            except StoreError as exc:
                log.warning("shutdown_flush_failed", error=str(exc), pending=self.writer.pending)
        return code

    def _check_all_stopped(self) -> None:
        if self.supervisor.shutting_down and not self.lives and self.supervisor.idle:
            self._all_stopped.set()

    # --- actions ---------------------------------------------------------------------

    def _dispatch(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, Start):
                assert self._tg is not None
                life = _Life(action.document_id, action.agent_id)
                self.lives[action.agent_id] = life
                self._tg.start_soon(self._live, life, action.restart)
            elif isinstance(action, Stop | Kill):
                life = self.lives.get(action.agent_id)
                if life is not None:
                    log.info(
                        "agent_stopping" if isinstance(action, Stop) else "agent_killing",
                        document_id=action.document_id,
                        agent_id=action.agent_id,
                        reason=action.reason,
                    )
                    life.request_stop(action.reason, kill=isinstance(action, Kill))
            elif isinstance(action, EndLife):
                self.writer.end_life(action.agent_id, action.status, action.reason)
                log.info(
                    "agent_life_ended",
                    document_id=action.document_id,
                    agent_id=action.agent_id,
                    status=action.status,
                    reason=action.reason,
                )
        self._wake.set()

    async def _live(self, life: _Life, restart: bool) -> None:
        """Claim, start, run and end one agent life."""
        doc, agent = life.document_id, life.agent_id
        try:
            try:
                async with self._claim_limiter:
                    claim = await self._claim(doc, agent)
            except StoreError as exc:
                log.warning("claim_failed", document_id=doc, error=str(exc))
                self._dispatch(self.supervisor.claim_failed(doc, agent, str(exc), _now()))
                return
            if not claim.claimed:
                log.info(
                    "document_owned_elsewhere",
                    document_id=doc,
                    owner_manager_id=claim.row.manager_id,
                    owner_agent_id=claim.row.agent_id,
                )
                reason = f"owned by manager {claim.row.manager_id}"
                self._dispatch(self.supervisor.claim_failed(doc, agent, reason, _now()))
                return
            if life.stop_reason is not None:
                self._dispatch(self.supervisor.worker_exited(doc, agent, "never started", _now()))
                return
            worker = self.fleet.process(self.worker_settings, doc, agent)
            try:
                await worker.start()
            except (OSError, ValueError, RuntimeError, EOFError) as exc:
                log.exception("worker_start_failed", document_id=doc)
                description = f"failed to start: {exc!r}"
                self._dispatch(self.supervisor.worker_exited(doc, agent, description, _now()))
                return
            life.worker = worker
            if life.kill:
                worker.kill()
            self.writer.set_status(
                agent,
                "connecting",
                pid=worker.pid,
                metadata={"pid_create_time": worker.create_time, "host": self.host},
            )
            log.info(
                "worker_restarted" if restart else "worker_started",
                document_id=doc,
                agent_id=agent,
                pid=worker.pid,
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pinger, life, worker)
                tg.start_soon(self._stopper, life, worker)
                exit_info = await worker.run(
                    on_message=lambda message: self._on_message(life, worker, message),
                    on_protocol_error=lambda reason: self._unhealthy(life, reason),
                )
                tg.cancel_scope.cancel()
            log.info(
                "worker_exited",
                document_id=doc,
                agent_id=agent,
                pid=worker.pid,
                how=exit_info.description,
                asked=life.stop_reason,
            )
            self._dispatch(self.supervisor.worker_exited(doc, agent, exit_info.description, _now()))
        finally:
            self.lives.pop(agent, None)
            self._check_all_stopped()

    async def _claim(self, document_id: str, agent_id: str) -> ClaimResult:
        settings = self.settings
        metadata = {"host": self.host, "manager_pid": os.getpid()}
        claim = await self.store.claim_document(
            document_id, agent_id, settings.manager_id, self.host, metadata
        )
        if (
            not claim.claimed
            and claim.row.manager_id == settings.manager_id
            and claim.row.agent_id not in self.lives
        ):
            # Our own previous life of this document; its end is still in the
            # writer's buffer. Write it, then claim again.
            await self.writer.flush()
            claim = await self.store.claim_document(
                document_id, agent_id, settings.manager_id, self.host, metadata
            )
        return claim

    async def _stopper(self, life: _Life, worker: WorkerProcess) -> None:
        await life.stop_requested.wait()
        if life.kill:
            worker.kill()
            return
        self.writer.set_status(life.agent_id, "detaching")
        await worker.stop(
            life.stop_reason or "detach",
            grace=self.settings.detach_grace_s,
            kill_grace=self.settings.kill_grace_s,
        )

    async def _pinger(self, life: _Life, worker: WorkerProcess) -> None:
        interval = self.settings.ping_interval_s
        timeout = self.settings.ping_timeout_s
        while True:
            await anyio.sleep(interval)
            if life.stop_reason is not None:
                return
            if not await worker.ping(timeout):
                if life.stop_reason is None:
                    log.warning(
                        "worker_ping_timeout",
                        document_id=life.document_id,
                        agent_id=life.agent_id,
                        pid=worker.pid,
                    )
                    self._unhealthy(life, f"no pong within {timeout:g} s")
                return

    def _unhealthy(self, life: _Life, reason: str) -> None:
        self._dispatch(
            self.supervisor.worker_unhealthy(life.document_id, life.agent_id, reason, _now())
        )

    def _on_message(self, life: _Life, worker: WorkerProcess, message: WorkerMessage) -> None:
        agent = life.agent_id
        if isinstance(message, Metrics):
            self.writer.add_metrics(
                agent,
                memory_mb=message.memory_mb,
                cpu_percent=message.cpu_percent,
                websocket_latency_ms=message.websocket_latency_ms,
                llm_response_time_ms=message.llm_response_time_ms,
            )
        elif isinstance(message, LlmCall):
            self.writer.count(agent, llm_calls=1)
        elif isinstance(message, LocationMarked):
            self.writer.count(agent, locations_marked=1)
        elif isinstance(message, Activity):
            self.writer.count(agent, at=datetime.now(UTC))
            actions = self.supervisor.worker_activity(life.document_id, agent, message.kind, _now())
            if message.kind == "abandoned":
                log.info("document_abandoned", document_id=life.document_id, agent_id=agent)
            self._dispatch(actions)
        elif isinstance(message, Connected):
            log.info(
                "worker_connected",
                document_id=life.document_id,
                agent_id=agent,
                pid=worker.pid,
                sync_ms=round(message.sync_ms, 1),
            )
            if life.stop_reason is None:
                self.writer.set_status(agent, "active", pid=worker.pid)
            self._dispatch(self.supervisor.worker_connected(life.document_id, agent, _now()))
            if self._on_connected is not None:
                self._on_connected(life.document_id, agent, time.perf_counter())
        elif isinstance(message, Error):
            log.warning(
                "worker_reported_error",
                document_id=life.document_id,
                agent_id=agent,
                message=message.message[:300],
                fatal=message.fatal,
            )
            self.supervisor.worker_error(life.document_id, agent, message.message)

    # --- timers ----------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            now = _now()
            deadline = self.supervisor.next_deadline(now)
            delay = 1.0 if deadline is None else min(1.0, max(0.0, deadline - now))
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()
            self._dispatch(self.supervisor.tick(_now()))

    async def _stats_loop(self) -> None:
        while True:
            await anyio.sleep(self.settings.stats_interval_s)
            await self.print_stats()

    def manager_stats(self) -> ManagerStats:
        sup = self.supervisor
        return ManagerStats(
            manager_id=self.settings.manager_id,
            running=sup.running,
            capacity=sup.capacity,
            waiting=sup.waiting,
            evictions=sup.evictions,
            restarts=sup.restarts,
            events_applied=sup.events_applied,
            event_lag_s=None if self.listener is None else self.listener.lag_s,
            worker_memory_mb=self.fleet.memory_mb(),
        )

    async def print_stats(self) -> None:
        try:
            system = await self.store.system_stats()
        except StoreError as exc:
            log.warning("stats_unavailable", error=str(exc))
            return
        print(render_stats_box(system, self.manager_stats()), flush=True)


async def run_manager(
    settings: Settings,
    conninfo: str,
    *,
    ready: Callable[[], None] | None = None,
    worker_target: Target | None = None,
    on_connected: OnConnected | None = None,
) -> int:
    """Run the manager until SIGTERM/SIGINT; return the exit code."""
    fleet = WorkerFleet(target=worker_target)
    await anyio.to_thread.run_sync(fleet.warm_up)
    store = await PostgresStore.connect(conninfo)
    try:
        daemon = ManagerDaemon(settings, store, conninfo, fleet, on_connected=on_connected)
        return await daemon.run(ready=ready)
    finally:
        fleet.kill_all()
        with anyio.CancelScope(shield=True):
            await store.aclose()
