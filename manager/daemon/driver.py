"""The manager daemon: the thin async driver around the :class:`Supervisor`.

One task group holds everything: the activity source, the store writer, one
task per agent life (:mod:`manager.supervise.lives`), a ticker for backoffs and
residencies, an audit of this manager's live rows (a row ended elsewhere stops
its worker), the heartbeat (watchdog, STATUS, loop lag: :mod:`manager.daemon.monitor`),
the stats loop, retention, the metrics server, and the signal loop. Decisions
are the supervisor's; this module only executes them and reports back what
happened.

Start-up: take this ``MANAGER_ID``'s lease (refusing to start beside a live
process holding it), recover the lives a previous, dead run of this manager left
behind, end the lives of every expired lease, read the latest event of every
document, attach the wanted ones (most recent first, up to the cap), follow the
event cursor, then tell systemd ``READY=1``. The lease is renewed by
:class:`manager.fleet.keeper.LeaseKeeper` until shutdown, then released.

Shutdown (SIGTERM/SIGINT): ``STOPPING=1``, stop reading events, detach every
worker concurrently within ``shutdown_timeout_s`` (SIGKILL what is left), end
their rows, flush, return 0. A second signal kills every worker at once and
returns 1. SIGUSR1 prints the stats box. SIGUSR2 (or ``docagents drain``) drains:
no new documents, every agent handed over make-before-break to the other
managers (the supervisor decides how); the process stays up, idle, until
SIGTERM. SIGTERM beside another live manager with a free slot drains first (a
rolling restart: at most ``drain_timeout_s`` plus ``shutdown_timeout_s``; a
second SIGTERM skips the rest of the handover), then stops as above.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

import anyio
import anyio.abc
import structlog

from manager.backends import (
    ActivitySource,
    ActivitySourceFactory,
    FleetNotices,
    open_backend,
    select_backend,
)
from manager.config import Settings
from manager.daemon.monitor import DaemonMonitor, OnConnected
from manager.errors import ConfigurationError, DocagentsError, StoreError
from manager.fleet.keeper import LeaseKeeper
from manager.ops.retention import run_retention
from manager.ops.sdnotify import SystemdNotifier
from manager.ops.stats import ManagerStats, WorkerMemory, render_stats_box
from manager.ops.telemetry import ManagerMetrics, MetricsServer
from manager.store.base import ActivityEvent, AgentRow, Store
from manager.store.writer import StoreWriter
from manager.supervise.lives import AgentLife, LifeRunner, monotonic
from manager.supervise.memory import MemoryKeeper
from manager.supervise.recovery import recover
from manager.supervise.supervisor import (
    Action,
    Claim,
    EndLife,
    Kill,
    RestartPolicy,
    Spawn,
    Stop,
    Supervisor,
)
from manager.workers.processes import Target, WorkerFleet, scrub_secret_environment

__all__ = ["ManagerDaemon", "run_manager"]

log = structlog.get_logger(__name__)

#: After a failed shutdown, how long SIGKILLed workers get to be reaped.
_REAP_TIMEOUT_S = 3.0


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
        fleet: WorkerFleet,
        *,
        activity_source: ActivitySourceFactory | None = None,
        writer: StoreWriter | None = None,
        notifier: SystemdNotifier | None = None,
        metrics: ManagerMetrics | None = None,
        on_connected: OnConnected | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.fleet = fleet
        self.host = socket.gethostname()
        if activity_source is None:
            if not conninfo:
                raise ValueError("ManagerDaemon needs an activity_source or a conninfo")
            activity_source = _listener_factory(settings, store, conninfo)
        self._activity_source = activity_source
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
            manager_id=settings.manager_id,
            holds_lease=False,  # until the lease is taken at start
            placement_delay_s=min(1.0, settings.lease_renew_s),
            drain_timeout_s=settings.drain_timeout_s,
        )
        self.writer = writer or StoreWriter(store, flush_interval_s=settings.flush_interval_s)
        if metrics is None and settings.metrics_port is not None:
            metrics = ManagerMetrics()
        if metrics is not None:
            metrics.info.labels(manager_id=settings.manager_id, version=_version()).set(1)
        self.metrics = metrics
        self.leases = LeaseKeeper(
            settings,
            store,
            self.supervisor,
            host=self.host,
            dispatch=self._dispatch,
            on_failover=self._count_failovers,
            on_renew_failure=self._count_renew_failure,
            on_displaced=self.request_shutdown,
            on_regained=self._audit_soon,
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
        fleet.memory = self.memory
        self.runner = LifeRunner(
            settings,
            store,
            self.writer,
            fleet,
            self.supervisor,
            dispatch=self._dispatch,
            observer=self.monitor,
            host=self.host,
            instance_id=str(self.leases.instance_id),
        )
        self.runner.on_life_ended = self._check_all_stopped
        self.listener: ActivitySource | None = None
        self.metrics_server: MetricsServer | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._wake = anyio.Event()
        self._audit_now = anyio.Event()
        self._all_stopped = anyio.Event()
        self._drained = anyio.Event()
        self._running = False
        self.started_at = datetime.now(UTC)
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
            ended, latest, cursor = await self._read_start_state()
            try:
                with _unwrap_start_error():
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
            self._dispatch(self.supervisor.load(latest, monotonic()))
            events_scope = anyio.CancelScope()
            await tg.start(self._follow_events, events_scope)
            tg.start_soon(self._ticker)
            tg.start_soon(self._audit_loop)
            lease_scope = anyio.CancelScope()
            tg.start_soon(self._keep_lease, lease_scope)
            tg.start_soon(self._stats_loop)
            if self.metrics is not None:
                tg.start_soon(self._memory_loop, self.metrics)
            if settings.retention_days is not None:
                tg.start_soon(self._retention, settings.retention_days)
            log.info("manager_ready", manager_id=settings.manager_id, attached=len(self.lives))
            self.monitor.ready()
            if ready is not None:
                ready()
            async for signum in self._requests:
                if signum == signal.SIGUSR1:
                    await self.print_stats()
                    continue
                if signum == signal.SIGUSR2:
                    self.leases.start_draining("SIGUSR2")
                    continue
                log.info("manager_stopping", signal=signal.Signals(signum).name)
                break
            self.monitor.stopping()
            if signum == signal.SIGTERM:
                await self._hand_over_before_stop()
            events_scope.cancel()
            code = await self._shutdown()
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

    async def _read_start_state(self) -> tuple[list[AgentRow], list[ActivityEvent], int]:
        try:
            # Raises ManagerAlreadyRunning (exit 78) beside a live holder: recovery
            # only ever runs against a dead one.
            await self.leases.acquire()
            ended = await recover(self.store, self.settings.manager_id)
            await self.leases.sweep()
            self.supervisor.lease_regained(monotonic())  # nothing is tracked yet
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
        self._dispatch(self.supervisor.apply_events(events, monotonic()))
        self.monitor.events_applied(events)

    async def _retention(self, days: float) -> None:
        await run_retention(self.store, days=days, interval_s=self.settings.retention_interval_s)

    async def _shutdown(self) -> int:
        self._dispatch(self.supervisor.shutdown())
        self._check_all_stopped()
        code = 0
        async with anyio.create_task_group() as tg:

            async def second_signal() -> None:
                nonlocal code
                async for signum in self._requests:
                    if signum in (signal.SIGUSR1, signal.SIGUSR2):
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
        if not self.lives and self.supervisor.idle:
            if self.supervisor.shutting_down:
                self._all_stopped.set()
            if self.supervisor.draining:
                self._drained.set()

    async def _hand_over_before_stop(self) -> None:
        """SIGTERM: drain make-before-break first when the supervisor says another live
        manager can take the agents over; wait until every life here ended, the
        drain's bound passed, or a second SIGTERM/SIGINT."""
        if not self.supervisor.hands_over_at_shutdown():
            return
        self.leases.start_draining("SIGTERM")
        self._check_all_stopped()
        bound = self.settings.drain_timeout_s + self.settings.shutdown_timeout_s
        with anyio.move_on_after(bound):
            async with anyio.create_task_group() as tg:

                async def second_signal() -> None:
                    async for signum in self._requests:
                        if signum in (signal.SIGTERM, signal.SIGINT):
                            log.warning("manager_handover_skipped", running=self.supervisor.running)
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(second_signal)
                await self._drained.wait()
                tg.cancel_scope.cancel()
        log.info("manager_handed_over", left=self.supervisor.running)

    # --- actions ---------------------------------------------------------------------

    def _dispatch(self, actions: Sequence[Action]) -> None:
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
            # Dispatch only when the clock produced something: _dispatch wakes
            # the ticker, so dispatching nothing would spin a core.
            actions = self.supervisor.tick(monotonic())
            if actions:
                self._dispatch(actions)

    def _audit_soon(self) -> None:
        self._audit_now.set()

    async def _audit_loop(self) -> None:
        """Every ``poll_interval_s`` (and at once after regaining the lease): are this
        manager's working lives still its own?

        A row ended by someone else (an operator, another manager taking the
        document over) means this worker must go; the supervisor decides.
        """
        while True:
            with anyio.move_on_after(self.settings.poll_interval_s):
                await self._audit_now.wait()
            self._audit_now = anyio.Event()
            checked = self.supervisor.working_lives()
            if not checked:
                continue
            try:
                rows = await self.store.live_agents_of_manager(self.settings.manager_id)
            except StoreError as exc:
                log.debug("row_audit_skipped", error=str(exc))
                continue
            live = {row.agent_id for row in rows}
            actions = self.supervisor.rows_audited(checked, live, monotonic())
            for action in actions:
                log.warning(
                    "agent_row_ended_elsewhere",
                    document_id=action.document_id,
                    agent_id=action.agent_id,
                )
            if actions:
                self._dispatch(actions)

    async def _stats_loop(self) -> None:
        while True:
            await anyio.sleep(self.settings.stats_interval_s)
            await self.print_stats()

    def worker_memory(self) -> WorkerMemory:
        """Sums of the live workers' latest reports (each worker measures itself).

        The manager does not read the workers' ``smaps_rollup`` itself: the kernel
        holds a worker's memory-map lock while it walks the page tables, and a
        reader descheduled on a busy host stalls that worker's allocations.
        """
        rss = pss = 0.0
        workers = 0
        for life in list(self.lives.values()):
            report = life.last_metrics
            if report is None:
                continue
            workers += 1
            rss += report.memory_mb
            pss += report.memory_mb if report.pss_mb is None else report.pss_mb
        return WorkerMemory(workers=workers, rss_mb=rss, pss_mb=pss)

    async def _memory_loop(self, metrics: ManagerMetrics) -> None:
        """The workers' memory for ``/metrics``, as often as they report it."""
        while True:
            memory = self.worker_memory()
            metrics.memory_pss.set(memory.pss_mb * 2**20)
            metrics.memory_rss.set(memory.rss_mb * 2**20)
            await anyio.sleep(self.settings.metrics_interval_s)

    async def manager_stats(self) -> ManagerStats:
        sup = self.supervisor
        memory = self.worker_memory()
        return ManagerStats(
            manager_id=self.settings.manager_id,
            running=sup.running,
            capacity=sup.capacity,
            waiting=sup.waiting,
            evictions=sup.evictions,
            restarts=sup.restarts,
            events_applied=sup.events_applied,
            event_lag_s=None if self.listener is None else self.listener.lag_s,
            worker_memory_mb=memory.pss_mb if memory.workers else None,
            worker_memory_rss_mb=memory.rss_mb if memory.workers else None,
            started_at=self.started_at,
        )

    async def print_stats(self) -> None:
        try:
            system = await self.store.system_stats()
            extraction = None
            if self.memory is not None:
                extraction = await self.store.extraction_stats()
        except StoreError as exc:
            log.warning("stats_unavailable", error=str(exc))
            return
        print(
            render_stats_box(system, await self.manager_stats(), extraction=extraction),
            flush=True,
        )


@contextlib.contextmanager
def _unwrap_start_error() -> Iterator[None]:
    """A configuration error raised inside the task group comes out as itself (for the CLI)."""
    try:
        yield
    except BaseExceptionGroup as group:
        cancelled = anyio.get_cancelled_exc_class()
        leaves = _leaves(group)
        errors = [e for e in leaves if not isinstance(e, cancelled)]
        if len(errors) == 1 and isinstance(errors[0], DocagentsError):
            raise errors[0] from group
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _listener_factory(settings: Settings, store: Store, conninfo: str) -> ActivitySourceFactory:
    from manager.events.listen import ActivityListener

    def activity_source(cursor: int) -> ActivitySource:
        return ActivityListener(
            conninfo, store, cursor=cursor, poll_interval_s=settings.poll_interval_s
        )

    return activity_source


async def run_manager(
    settings: Settings,
    conninfo: str | None = None,
    *,
    ready: Callable[[], None] | None = None,
    worker_target: Target | None = None,
    on_connected: OnConnected | None = None,
    notifier: SystemdNotifier | None = None,
) -> int:
    """Run the manager on the selected backend until SIGTERM/SIGINT; return the exit code.

    ``conninfo``: a Postgres the caller already holds (``docagents up``); ignored
    when the settings select Supabase. Raises :class:`ConfigurationError` for
    settings that cannot work and :class:`~manager.errors.StoreUnavailable` when
    the database cannot be reached at start.
    """
    kind = select_backend(settings)
    fleet = WorkerFleet(target=worker_target, warm_pool=settings.warm_pool_size)
    # The secrets leave the environment before any child starts (the template,
    # if `start_early` did not start it already, and the docserver of `up`).
    scrub_secret_environment()
    try:
        async with open_backend(settings, conninfo=conninfo) as backend:
            # The worker template imports in its own process (started early by the
            # CLI) while the backend opened; recovery runs while the pool fills. A
            # database that is not there fails the start before any of that.
            await anyio.to_thread.run_sync(fleet.warm_up)
            log.info("manager_backend", kind=kind, database=backend.description)
            daemon = ManagerDaemon(
                settings,
                backend.store,
                backend.conninfo,
                fleet,
                activity_source=backend.activity_source,
                writer=backend.writer,
                notifier=notifier,
                on_connected=on_connected,
            )
            return await daemon.run(ready=ready)
    finally:
        fleet.kill_all()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("docagents")
    except PackageNotFoundError:
        return "unknown"
