"""What the running manager reports about itself: the stats box and the workers' memory.

The stats box (:func:`~manager.ops.stats.render_stats_box`) goes to stdout on
SIGUSR1 and every ``stats_interval_s``; the workers' memory goes to the
``/metrics`` gauges every ``metrics_interval_s``. Each worker measures its own
memory and reports it on its pipe; the manager only adds the latest reports up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

import anyio
import structlog

from manager.config import Settings
from manager.errors import StoreError
from manager.ops.stats import ManagerStats, WorkerMemory, render_stats_box
from manager.ops.telemetry import ManagerMetrics
from manager.store.base import Store
from manager.supervise.lives import AgentLife
from manager.supervise.supervisor import Supervisor

__all__ = ["ManagerReports"]

log = structlog.get_logger(__name__)


class ManagerReports:
    """Builds :class:`~manager.ops.stats.ManagerStats` and prints or exports it.

    ``lives``: the live agent lives (their latest metrics reports); ``event_lag_s``:
    the activity source's lag, None before it runs; ``extraction``: whether the
    box shows the extraction figures (this manager remembers extractions).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        supervisor: Supervisor,
        *,
        lives: Mapping[str, AgentLife],
        event_lag_s: Callable[[], float | None],
        extraction: bool,
        started_at: datetime,
    ) -> None:
        self.settings = settings
        self.store = store
        self.supervisor = supervisor
        self.lives = lives
        self.event_lag_s = event_lag_s
        self.extraction = extraction
        self.started_at = started_at

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

    async def manager_stats(self) -> ManagerStats:
        sup = self.supervisor
        memory = self.worker_memory()
        return ManagerStats(
            manager_id=self.settings.manager_id,
            running=sup.lives,
            capacity=sup.capacity,
            waiting=sup.waiting,
            evictions=sup.evictions,
            restarts=sup.restarts,
            events_applied=sup.events_applied,
            event_lag_s=self.event_lag_s(),
            worker_memory_mb=memory.pss_mb if memory.workers else None,
            worker_memory_rss_mb=memory.rss_mb if memory.workers else None,
            started_at=self.started_at,
        )

    async def print_stats(self) -> None:
        """Print the stats box to stdout (a warning instead when the store cannot answer)."""
        try:
            system = await self.store.system_stats()
            extraction = None
            if self.extraction:
                extraction = await self.store.extraction_stats()
        except StoreError as exc:
            log.warning("stats_unavailable", error=str(exc))
            return
        print(
            render_stats_box(system, await self.manager_stats(), extraction=extraction),
            flush=True,
        )

    async def run_stats_box(self) -> None:
        """Print the stats box every ``stats_interval_s``."""
        while True:
            await anyio.sleep(self.settings.stats_interval_s)
            await self.print_stats()

    async def run_memory_gauges(self, metrics: ManagerMetrics) -> None:
        """The workers' memory for ``/metrics``, as often as they report it."""
        while True:
            memory = self.worker_memory()
            metrics.memory_pss.set(memory.pss_mb * 2**20)
            metrics.memory_rss.set(memory.rss_mb * 2**20)
            await anyio.sleep(self.settings.metrics_interval_s)
