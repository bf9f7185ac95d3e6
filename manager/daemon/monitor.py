"""What a running manager tells the outside: Prometheus figures, ``/healthz``, sd_notify.

:class:`DaemonMonitor` hears about lives (it is the :class:`~manager.supervise.lives.LifeObserver`)
and events, keeps :class:`~manager.ops.telemetry.ManagerMetrics` current, and runs
the heartbeat: a task on the daemon's own event loop that wakes every
``period`` seconds, measures how late it woke (the loop's lag), and only then

* sends ``WATCHDOG=1`` (every ``WATCHDOG_USEC/2``), unless the measured lag is
  over the watchdog interval: a loop blocked by a synchronous call sends
  nothing, and systemd kills a loop that stays blocked;
* sends ``STATUS=`` with the running/waiting counts when they change (at most
  once a second);
* records that the loop is alive, for ``/healthz``.

Healthy (``/healthz`` 200) = the heartbeat ran recently, and the database is
reachable (activity source connected, writer healthy) or the writer is
buffering within bounds (no sample dropped in the last minute).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import anyio
import structlog

from manager.backends import ActivitySource
from manager.ops.sdnotify import SystemdNotifier
from manager.ops.telemetry import Health, ManagerMetrics
from manager.store.base import ActivityEvent
from manager.store.writer import StoreWriter
from manager.supervise.lives import AgentLife
from manager.supervise.supervisor import Phase, Supervisor

__all__ = ["DaemonMonitor"]

log = structlog.get_logger(__name__)

#: Heartbeat period when no watchdog asks for a shorter one.
_BEAT_S = 1.0
#: STATUS= at most this often.
_STATUS_EVERY_S = 1.0
#: A dropped metrics sample makes the writer "out of bounds" for this long.
_DROP_MEMORY_S = 60.0
#: Documents whose attach is being timed, at most (memory bound).
_MAX_TIMED = 100_000

OnConnected = Callable[[str, str, float], None]


class DaemonMonitor:
    def __init__(
        self,
        supervisor: Supervisor,
        writer: StoreWriter,
        *,
        notifier: SystemdNotifier,
        metrics: ManagerMetrics | None = None,
        on_connected: OnConnected | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.writer = writer
        self.notifier = notifier
        self.metrics = metrics
        self.source: ActivitySource | None = None
        self._on_connected = on_connected
        watchdog = notifier.watchdog_interval_s
        self.watchdog_interval_s = watchdog
        self.period_s = _BEAT_S if watchdog is None else min(_BEAT_S, watchdog / 2)
        self.loop_lag_s = 0.0
        self.last_beat = time.monotonic()
        self.watchdogs_sent = 0
        self._last_watchdog = float("-inf")
        self._status_text = ""
        self._last_status = float("-inf")
        self._dropped_seen = writer.dropped
        self._last_drop = float("-inf")
        #: document_id -> timestamp of the event that made it wanted, until connected
        self._wanted_since: dict[str, datetime] = {}
        self._synced = (0, 0, 0)
        self._dropped_synced = 0
        if metrics is not None:
            metrics.capacity.set(supervisor.capacity)
            metrics.ready.set(0)

    # --- LifeObserver ----------------------------------------------------------------

    def worker_started(self, life: AgentLife, restart: bool) -> None:
        if self.metrics is not None:
            self.metrics.spawns.inc()

    def worker_connected(self, life: AgentLife) -> None:
        since = self._wanted_since.pop(life.document_id, None)
        if since is not None and self.metrics is not None:
            latency = (datetime.now(UTC) - since).total_seconds()
            self.metrics.attach_latency.observe(max(latency, 0.0))
        if self._on_connected is not None:
            self._on_connected(life.document_id, life.agent_id, time.perf_counter())

    def worker_exited(self, life: AgentLife, asked: bool) -> None:
        if not asked and self.metrics is not None:
            self.metrics.crashes.inc()

    def llm_call(self, response_time_ms: float, ok: bool = True) -> None:
        if self.metrics is not None:
            self.metrics.llm_calls.inc()
            self.metrics.llm_latency.observe(response_time_ms / 1000)
            if not ok:
                self.metrics.llm_failures.inc()

    def location_marked(self) -> None:
        if self.metrics is not None:
            self.metrics.locations_marked.inc()

    def agent_fenced(self, life: AgentLife) -> None:
        if self.metrics is not None:
            self.metrics.fenced.inc()

    # --- events and figures ----------------------------------------------------------

    def events_applied(self, events: Sequence[ActivityEvent]) -> None:
        """After the supervisor applied ``events``: start or stop timing attaches."""
        for event in events:
            doc = event.document_id
            if event.event_type == "idle":
                self._wanted_since.pop(doc, None)
            elif (
                event.event_type in ("active", "user_joined")
                and doc not in self._wanted_since
                and self.supervisor.phase(doc) is not Phase.RUNNING
                and self.supervisor.is_wanted(doc)
                and len(self._wanted_since) < _MAX_TIMED
            ):
                self._wanted_since[doc] = event.timestamp

    def sync(self) -> None:
        """Copy the supervisor's figures into the Prometheus metrics (cheap; often)."""
        metrics = self.metrics
        if metrics is None:
            return
        sup = self.supervisor
        metrics.running.set(sup.lives)
        metrics.waiting.set(sup.waiting)
        evictions, restarts, applied = self._synced
        if sup.evictions > evictions:
            metrics.evictions.inc(sup.evictions - evictions)
        if sup.restarts > restarts:
            metrics.restarts.inc(sup.restarts - restarts)
        if sup.events_applied > applied:
            metrics.events_applied.inc(sup.events_applied - applied)
        self._synced = (sup.evictions, sup.restarts, sup.events_applied)
        metrics.database_reachable.set(1 if self.database_reachable() else 0)
        metrics.writer_pending.set(self.writer.pending)
        dropped = self.writer.dropped
        if dropped > self._dropped_synced:
            metrics.writer_dropped.inc(dropped - self._dropped_synced)
            self._dropped_synced = dropped
        metrics.loop_lag.set(self.loop_lag_s)
        lag = None if self.source is None else self.source.lag_s
        if lag is not None:
            metrics.event_lag.set(lag)

    def database_reachable(self) -> bool:
        return self.source is not None and self.source.connected and self.writer.healthy

    def status_text(self) -> str:
        sup = self.supervisor
        text = f"running {sup.lives}/{sup.capacity}, waiting {sup.waiting}"
        if not self.writer.healthy or (self.source is not None and not self.source.connected):
            text += ", database unreachable (buffering)"
        return text

    # --- sd_notify -------------------------------------------------------------------

    def ready(self) -> None:
        if self.metrics is not None:
            self.metrics.ready.set(1)
        self._status_text = self.status_text()
        self._last_status = time.monotonic()
        if self.notifier.ready(self._status_text):
            log.info("sd_notify_ready", status=self._status_text)

    def stopping(self) -> None:
        if self.metrics is not None:
            self.metrics.ready.set(0)
        self.notifier.notify("STOPPING=1", "STATUS=stopping: detaching the workers")

    async def run_heartbeat(self) -> None:
        """Until cancelled: measure the loop's lag, ping the watchdog, update STATUS."""
        period = self.period_s
        watchdog = self.watchdog_interval_s
        last = time.monotonic()
        while True:
            await anyio.sleep(period)
            now = time.monotonic()
            self.loop_lag_s = max(0.0, now - last - period)
            last = self.last_beat = now
            self.sync()
            self._note_drops(now)
            if watchdog is not None:
                if self.loop_lag_s > watchdog:
                    log.warning("event_loop_lagging", lag_s=round(self.loop_lag_s, 3))
                elif now - self._last_watchdog >= watchdog / 2 - period / 2:
                    self.notifier.watchdog()
                    self.watchdogs_sent += 1
                    self._last_watchdog = now
            text = self.status_text()
            if text != self._status_text and now - self._last_status >= _STATUS_EVERY_S:
                self._status_text, self._last_status = text, now
                self.notifier.status(text)

    def _note_drops(self, now: float) -> None:
        dropped = self.writer.dropped
        if dropped != self._dropped_seen:
            self._dropped_seen = dropped
            self._last_drop = now

    # --- /healthz --------------------------------------------------------------------

    def health(self) -> Health:
        now = time.monotonic()
        since_beat = now - self.last_beat
        loop_ok = since_beat <= max(3 * self.period_s, 2.0)
        database_ok = self.database_reachable()
        buffering_ok = now - self._last_drop > _DROP_MEMORY_S
        sup = self.supervisor
        return Health(
            healthy=loop_ok and (database_ok or buffering_ok),
            details={
                "event_loop": "responsive" if loop_ok else "stalled",
                "loop_lag_s": round(self.loop_lag_s, 3),
                "seconds_since_heartbeat": round(since_beat, 3),
                "database": "reachable" if database_ok else "unreachable",
                "writer_pending": self.writer.pending,
                "writer_dropped": self.writer.dropped,
                "running": sup.lives,
                "waiting": sup.waiting,
                "capacity": sup.capacity,
            },
        )
