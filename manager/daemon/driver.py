"""The manager daemon: the thin async driver around the :class:`Supervisor`.

One task group holds everything: the activity source, the store writer, one
task per agent life (:mod:`manager.supervise.lives`), a ticker for backoffs and
residencies, the row audit (:mod:`manager.daemon.audit`), the heartbeat
(watchdog, STATUS, loop lag: :mod:`manager.daemon.monitor`), the stats box and
memory gauges (:mod:`manager.daemon.reports`), retention, the metrics server,
and the signal loop. Decisions are the supervisor's; this module only executes
them and reports back what happened.

Start-up: read the start state (:func:`manager.daemon.start.read_start_state`:
the lease, recovery, the latest events), attach the wanted documents (most
recent first, up to the cap), follow the event cursor, then tell systemd
``READY=1``. The lease is renewed by :class:`manager.fleet.keeper.LeaseKeeper`
until shutdown, then released. :func:`manager.daemon.run.run_manager` builds
the daemon on the selected backend.

Shutdown (SIGTERM/SIGINT): ``STOPPING=1``, stop reading events, detach every
worker concurrently within ``shutdown_timeout_s`` (SIGKILL what is left), end
their rows, flush, return 0. A second signal kills every worker at once and
returns 1. SIGUSR1 prints the stats box. SIGUSR2 (or ``docagents drain``) drains:
no new documents, every agent handed over make-before-break to the other
managers (the supervisor decides how); the process stays up, idle, until
SIGTERM. SIGTERM beside another live manager with a free slot drains first (a
rolling restart: at most ``drain_timeout_s`` plus ``shutdown_timeout_s``; a
second SIGTERM skips the rest of the handover), then stops as above
(:mod:`manager.daemon.stopping`).
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta

import anyio
import anyio.abc
import structlog

from manager.backends import ActivitySource, ActivitySourceFactory, FleetNotices
from manager.config import Settings
from manager.daemon.audit import RowAudit
from manager.daemon.monitor import DaemonMonitor, OnConnected
from manager.daemon.reports import ManagerReports
from manager.daemon.start import (
    listener_factory,
    new_supervisor,
    package_version,
    read_start_state,
    unwrap_start_error,
)
from manager.daemon.stopping import hand_over_before_stop, shut_down
from manager.errors import ConfigurationError
from manager.fleet.keeper import LeaseKeeper
from manager.ops.retention import run_retention
from manager.ops.sdnotify import SystemdNotifier
from manager.ops.telemetry import ManagerMetrics, MetricsServer
from manager.store.base import ActivityEvent, AgentRow, Store
from manager.store.writer import StoreWriter
from manager.supervise.lives import AgentLife, LifeRunner, monotonic
from manager.supervise.memory import MemoryKeeper
from manager.supervise.supervisor import (
    Action,
    Claim,
    EndLife,
    Kill,
    Spawn,
    Stop,
)
from manager.workers.launcher import WorkerLauncher

__all__ = ["ManagerDaemon"]

log = structlog.get_logger(__name__)


class ManagerDaemon:
    """Executes the supervisor's decisions against real processes and the store.

    ``activity_source`` builds the event source from a cursor
    (:func:`manager.backends.open_backend` gives one per backend); without it,
    an :class:`~manager.events.listen.ActivityListener` on ``conninfo`` is used.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        conninfo: str | None,
        launcher: WorkerLauncher,
        *,
        activity_source: ActivitySourceFactory | None = None,
        writer: StoreWriter | None = None,
        notifier: SystemdNotifier | None = None,
        metrics: ManagerMetrics | None = None,
        on_connected: OnConnected | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.launcher = launcher
        self.host = socket.gethostname()
        if activity_source is None:
            if not conninfo:
                raise ValueError("ManagerDaemon needs an activity_source or a conninfo")
            activity_source = listener_factory(settings, store, conninfo)
        self._activity_source = activity_source
        self.supervisor = new_supervisor(settings)
        self.writer = writer or StoreWriter(store, flush_interval_s=settings.flush_interval_s)
        if metrics is None and settings.metrics_port is not None:
            metrics = ManagerMetrics()
        if metrics is not None:
            metrics.info.labels(manager_id=settings.manager_id, version=package_version()).set(1)
        self.metrics = metrics
        self.audit = RowAudit(
            store,
            self.supervisor,
            manager_id=settings.manager_id,
            interval_s=settings.poll_interval_s,
            dispatch=self.dispatch,
        )
        self.leases = LeaseKeeper(
            settings,
            store,
            self.supervisor,
            host=self.host,
            dispatch=self.dispatch,
            on_failover=self._count_failovers,
            on_renew_failure=self._count_renew_failure,
            on_displaced=self.request_shutdown,
            on_regained=self.audit.soon,
        )
        self.monitor = DaemonMonitor(
            self.supervisor,
            self.writer,
            notifier=notifier or SystemdNotifier(),
            metrics=metrics,
            on_connected=on_connected,
        )
        self.memory: MemoryKeeper | None = None
        if settings.remembers_extractions():
            self.memory = MemoryKeeper(
                store,
                cap=settings.extraction_memory_cap,
                retention=timedelta(days=settings.extraction_memory_retention_days),
                flush_interval_s=settings.flush_interval_s,
                prune_interval_s=settings.retention_interval_s,
                metrics=metrics,
            )
        launcher.memory = self.memory
        self.runner = LifeRunner(
            settings,
            store,
            self.writer,
            launcher,
            self.supervisor,
            dispatch=self.dispatch,
            observer=self.monitor,
            host=self.host,
            instance_id=str(self.leases.instance_id),
        )
        self.runner.on_life_ended = self.check_all_stopped
        self.listener: ActivitySource | None = None
        self.metrics_server: MetricsServer | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._wake = anyio.Event()
        self.all_stopped = anyio.Event()
        self.drained = anyio.Event()
        self._running = False
        self.started_at = datetime.now(UTC)
        self.reports = ManagerReports(
            settings,
            store,
            self.supervisor,
            lives=self.runner.lives,
            event_lag_s=lambda: None if self.listener is None else self.listener.lag_s,
            extraction=self.memory is not None,
            started_at=self.started_at,
        )
        self._requests_in, self._requests = anyio.create_memory_object_stream[int](64)

    @property
    def lives(self) -> dict[str, AgentLife]:
        return self.runner.lives

    # --- the whole run ---------------------------------------------------------------

    async def run(self, *, ready: Callable[[], None] | None = None) -> int:
        if self._running:
            raise RuntimeError("ManagerDaemon.run() called twice")
        self._running = True
        with (
            self._requests_in,
            self._requests,
            anyio.open_signal_receiver(
                signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2
            ) as signals,
        ):
            ended, latest, cursor = await read_start_state(
                self.leases, self.store, self.supervisor, self.settings.manager_id
            )
            try:
                with unwrap_start_error():
                    code = await self._run_services(signals, ended, latest, cursor, ready)
            finally:
                self.monitor.notifier.close()
        log.info("manager_stopped", exit_code=code)
        return code

    async def _run_services(
        self,
        signals: AsyncIterator[int],
        ended: list[AgentRow],
        latest: list[ActivityEvent],
        cursor: int,
        ready: Callable[[], None] | None,
    ) -> int:
        settings = self.settings
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._forward_signals, signals)
            await self._start_metrics_server(tg)
            tg.start_soon(self.monitor.run_heartbeat)
            log.info(
                "manager_starting",
                manager_id=settings.manager_id,
                capacity=settings.max_concurrent_agents,
                stale_lives_ended=len(ended),
                documents_known=len(latest),
                cursor=cursor,
            )
            self.listener = self.monitor.source = self._activity_source(cursor)
            if isinstance(self.listener, FleetNotices):
                self.listener.on_fleet_notice = self.leases.wake
            await tg.start(self.writer.run)
            if self.memory is not None:
                await tg.start(self.memory.run)
            self.dispatch(self.supervisor.load(latest, monotonic()))
            events_scope = anyio.CancelScope()
            await tg.start(self._follow_events, events_scope)
            tg.start_soon(self._ticker)
            tg.start_soon(self.audit.run)
            lease_scope = anyio.CancelScope()
            tg.start_soon(self._keep_lease, lease_scope)
            tg.start_soon(self.reports.run_stats_box)
            if self.metrics is not None:
                tg.start_soon(self.reports.run_memory_gauges, self.metrics)
            if settings.retention_days is not None:
                tg.start_soon(self._retention, settings.retention_days)
            log.info("manager_ready", manager_id=settings.manager_id, attached=len(self.lives))
            self.monitor.ready()
            if ready is not None:
                ready()
            async for signum in self._requests:
                if signum == signal.SIGUSR1:
                    await self.reports.print_stats()
                    continue
                if signum == signal.SIGUSR2:
                    self.leases.start_draining("SIGUSR2")
                    continue
                log.info("manager_stopping", signal=signal.Signals(signum).name)
                break
            self.monitor.stopping()
            if signum == signal.SIGTERM:
                await hand_over_before_stop(self, self._requests)
            events_scope.cancel()
            code = await shut_down(self, self._requests)
            lease_scope.cancel()
            await self.leases.release()
            tg.cancel_scope.cancel()  # the writer's final flush runs on cancel
        return code

    def request_shutdown(self) -> None:
        """Stop as on SIGTERM (a second call: as on a second signal)."""
        with contextlib.suppress(anyio.ClosedResourceError, anyio.WouldBlock):
            self._requests_in.send_nowait(signal.SIGTERM)

    @property
    def metrics_port(self) -> int | None:
        """The bound metrics port (after ready), or None when metrics are off."""
        return None if self.metrics_server is None else self.metrics_server.port

    async def _forward_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            await self._requests_in.send(signum)

    async def _start_metrics_server(self, tg: anyio.abc.TaskGroup) -> None:
        port = self.settings.metrics_port
        if port is None or self.metrics is None:
            return
        server = MetricsServer(
            self.metrics, self.monitor.health, host=self.settings.metrics_host, port=port
        )
        try:
            await tg.start(server.run)
        except OSError as exc:
            raise ConfigurationError(
                f"METRICS_PORT {port} on {self.settings.metrics_host} is not available: {exc}"
            ) from exc
        self.metrics_server = server

    async def _keep_lease(self, scope: anyio.CancelScope) -> None:
        with scope:
            await self.leases.run()

    def _count_failovers(self, n: int) -> None:
        if self.metrics is not None:
            self.metrics.failovers.inc(n)

    def _count_renew_failure(self) -> None:
        if self.metrics is not None:
            self.metrics.lease_renew_failures.inc()

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
        self.dispatch(self.supervisor.apply_events(events, monotonic()))
        self.monitor.events_applied(events)

    async def _retention(self, days: float) -> None:
        await run_retention(self.store, days=days, interval_s=self.settings.retention_interval_s)

    def check_all_stopped(self) -> None:
        """Every life here ended: the shutdown, or the drain, is done."""
        if not self.lives and self.supervisor.lives == 0:
            if self.supervisor.shutting_down:
                self.all_stopped.set()
            if self.supervisor.draining:
                self.drained.set()

    # --- actions ---------------------------------------------------------------------

    def dispatch(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, Claim):
                assert self._tg is not None
                self.runner.claim(self._tg, action)
            elif isinstance(action, Spawn):
                assert self._tg is not None
                self.runner.spawn(self._tg, action)
            elif isinstance(action, Stop | Kill):
                self.runner.stop(
                    action.document_id,
                    action.agent_id,
                    action.reason,
                    kill=isinstance(action, Kill),
                )
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
        self.monitor.sync()

    # --- timers ----------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            now = monotonic()
            deadline = self.supervisor.next_deadline(now)
            delay = 1.0 if deadline is None else min(1.0, max(0.0, deadline - now))
            with anyio.move_on_after(delay) as timer:
                await self._wake.wait()
            self._wake = anyio.Event()
            if not timer.cancel_called:
                # Woken by a dispatch: the input behind it has already been
                # reconciled; only the deadline may have moved.
                continue
            # Dispatch only when the clock produced something: dispatch wakes
            # the ticker, so dispatching nothing would spin a core.
            actions = self.supervisor.tick(monotonic())
            if actions:
                self.dispatch(actions)
