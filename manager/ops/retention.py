"""Retention: keep ``agent_metrics`` and ``document_activity`` from growing forever.

With ``RETENTION_DAYS`` set, the manager calls ``prune_history`` (a SQL
function) every ``interval_s``: batches of at most ``batch`` rows per table,
repeated while batches come back full, with a pause between them so the
database is never held for long. A document's latest activity event is never
deleted (the wanted set is computed from it). Several managers may prune the
same database at once: the function skips rows another one has locked.
"""

from __future__ import annotations

from datetime import timedelta

import anyio
import structlog

from manager.errors import StoreError
from manager.store.base import Store

__all__ = ["prune_once", "run_retention"]

log = structlog.get_logger(__name__)


async def prune_once(
    store: Store, *, days: float, batch: int = 5000, pause_s: float = 0.05, max_batches: int = 1000
) -> tuple[int, int]:
    """Prune until a batch comes back short; return the (metrics, activity) totals."""
    older_than = timedelta(days=days)
    total_metrics = total_activity = 0
    for _ in range(max_batches):
        metrics, activity = await store.prune_history(older_than, batch)
        total_metrics += metrics
        total_activity += activity
        if metrics < batch and activity < batch:
            break
        await anyio.sleep(pause_s)
    if total_metrics or total_activity:
        log.info(
            "retention_pruned",
            metrics_deleted=total_metrics,
            activity_deleted=total_activity,
            days=days,
        )
    return total_metrics, total_activity


async def run_retention(
    store: Store, *, days: float, interval_s: float = 3600.0, batch: int = 5000
) -> None:
    """Prune now and then every ``interval_s``, until cancelled. Errors are logged."""
    while True:
        try:
            await prune_once(store, days=days, batch=batch)
        except StoreError as exc:
            log.warning("retention_failed", error=str(exc))
        await anyio.sleep(interval_s)
