"""Buffered, ordered, bounded writes of agent state to the store.

The supervisor never waits on the database for what workers report:
:class:`StoreWriter` takes status changes, end-of-lives, metrics samples and
counters without blocking, and writes them from its own loop —

- status changes and end-of-lives in submission order (so per agent too),
  as soon as they are submitted; a run of status changes goes as one
  ``set_agent_statuses`` call (a burst of starts is one round trip, not hundreds);
- all pending metrics samples and counters about once a second, as ONE
  ``record_agent_metrics`` call (counters are summed per agent meanwhile).

While the database is unreachable everything stays buffered and the loop
retries with backoff (at most ``backoff_max_s``, 1 s, apart, so writes are back
within about a second of the database); workers keep running. An end of life
carries the time it happened, which the row keeps however late it is written.
The buffer is bounded: past ``max_pending`` the OLDEST metrics samples are
dropped first (a warning says how many); status changes and end-of-lives are
never dropped.

A write that the database refuses (``StoreError``, not ``StoreUnavailable``)
is logged and dropped, so one bad record cannot block the rest. A write whose
answer was lost with the connection is repeated after reconnect: status changes
and end-of-lives are idempotent, and a metrics batch is repeated as it was, with
its id (this writer's random id and a number that only grows), which
``record_agent_metrics_once`` records once; newer samples and counts go in the
next batch. So a counter is never added twice.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import anyio.abc
import structlog

from manager.errors import StoreError, StoreUnavailable
from manager.store.base import BatchId, MetricsRecord, StatusChange, Store

__all__ = ["StoreWriter"]

log = structlog.get_logger(__name__)

#: At most this many status changes in one ``set_agent_statuses`` call.
_STATUS_BATCH = 500


@dataclass(frozen=True, slots=True)
class _EndLife:
    agent_id: str
    status: str
    reason: str | None
    #: when the life really ended (kept through an outage: the row gets this time)
    ended_at: datetime


@dataclass(slots=True)
class _Counter:
    llm_calls: int = 0
    locations_marked: int = 0
    last_activity_at: datetime | None = None


class StoreWriter:
    """Writes agent state in the background; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        flush_interval_s: float = 1.0,
        max_pending: int = 100_000,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 1.0,
        final_flush_timeout_s: float = 5.0,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._store = store
        self._flush_interval_s = flush_interval_s
        self._max_pending = max_pending
        self._backoff_min_s = backoff_min_s
        self._backoff_max_s = backoff_max_s
        self._final_flush_timeout_s = final_flush_timeout_s
        self._ops: deque[StatusChange | _EndLife] = deque()
        self._samples: deque[MetricsRecord] = deque()
        self._counters: dict[str, _Counter] = {}
        #: The batch sent last whose answer never came: sent again, unchanged, first.
        self._unsent: tuple[BatchId, deque[MetricsRecord], list[MetricsRecord]] | None = None
        self._writer_id = uuid.uuid4()
        self._batch_seq = 0
        self._dropped = 0
        self._healthy = True
        self._running = False
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self.flushes = 0
        self.metrics_calls = 0

    # ------------------------------------------------------------ submitting

    @property
    def pending(self) -> int:
        """Status changes, end-of-lives, samples and per-agent counters not yet written."""
        unsent = 0 if self._unsent is None else len(self._unsent[1]) + len(self._unsent[2])
        return len(self._ops) + len(self._samples) + len(self._counters) + unsent

    @property
    def healthy(self) -> bool:
        """False while the database is unreachable and writes are buffered."""
        return self._healthy

    @property
    def dropped(self) -> int:
        """Metrics samples dropped so far because the buffer was full."""
        return self._dropped

    def set_status(
        self,
        agent_id: str,
        status: str,
        pid: int | None = None,
        metadata: dict[str, object] | None = None,
    ) -> None:
        self._ops.append(StatusChange(agent_id, status, pid, metadata))
        self._made_room()
        self._wake.set()

    def end_life(self, agent_id: str, status: str, reason: str | None) -> None:
        self._ops.append(_EndLife(agent_id, status, reason, datetime.now(UTC)))
        self._made_room()
        self._wake.set()

    def add_metrics(
        self,
        agent_id: str,
        *,
        memory_mb: float | None = None,
        pss_mb: float | None = None,
        uss_mb: float | None = None,
        cpu_percent: float | None = None,
        websocket_latency_ms: float | None = None,
        llm_response_time_ms: float | None = None,
    ) -> None:
        self._samples.append(
            MetricsRecord(
                agent_id=agent_id,
                memory_mb=memory_mb,
                pss_mb=pss_mb,
                uss_mb=uss_mb,
                cpu_percent=cpu_percent,
                websocket_latency_ms=websocket_latency_ms,
                llm_response_time_ms=llm_response_time_ms,
                recorded_at=datetime.now(UTC),
            )
        )
        self._made_room()

    def count(
        self,
        agent_id: str,
        *,
        llm_calls: int = 0,
        locations_marked: int = 0,
        at: datetime | None = None,
    ) -> None:
        counter = self._counters.get(agent_id)
        if counter is None:
            counter = self._counters[agent_id] = _Counter()
            self._made_room()
        counter.llm_calls += llm_calls
        counter.locations_marked += locations_marked
        if at is not None and (counter.last_activity_at is None or at > counter.last_activity_at):
            counter.last_activity_at = at

    def _made_room(self) -> None:
        """Drop the oldest samples while over the bound (never status changes)."""
        over = self.pending - self._max_pending
        dropped = 0
        # The unsent batch's samples are the oldest. Dropping some keeps that batch
        # a repeat of itself: recorded already, it is skipped whole anyway.
        oldest = [] if self._unsent is None else [self._unsent[1]]
        for samples in (*oldest, self._samples):
            while over > 0 and samples:
                samples.popleft()
                over -= 1
                dropped += 1
        if dropped:
            if self._dropped == 0 or self._dropped // 1000 != (self._dropped + dropped) // 1000:
                log.warning(
                    "metrics_samples_dropped",
                    dropped=dropped,
                    dropped_total=self._dropped + dropped,
                    max_pending=self._max_pending,
                )
            self._dropped += dropped

    # -------------------------------------------------------------- writing

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Flush every ``flush_interval_s`` (status changes at once) until cancelled.

        On cancellation: one final best-effort flush, bounded in time.
        """
        if self._running:
            raise RuntimeError("StoreWriter.run() called twice")
        self._running = True
        task_status.started()
        failures = 0
        try:
            while True:
                with anyio.move_on_after(self._flush_interval_s):
                    await self._wake.wait()
                self._wake = anyio.Event()
                try:
                    await self.flush()
                except StoreUnavailable as exc:
                    delay = min(self._backoff_max_s, self._backoff_min_s * 2**failures)
                    failures += 1
                    log.warning(
                        "store_writes_buffered",
                        error=str(exc),
                        pending=self.pending,
                        retry_in_s=round(delay, 2),
                    )
                    await anyio.sleep(delay * random.uniform(0.8, 1.0))
                else:
                    failures = 0
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._final_flush_timeout_s):
                try:
                    await self.flush()
                except StoreError as exc:
                    log.warning("store_final_flush_failed", error=str(exc), pending=self.pending)

    async def flush(self) -> None:
        """Write everything pending now: ordered status changes, then one metrics batch.

        Raises :class:`StoreUnavailable` (what failed stays buffered).
        """
        async with self._lock:
            try:
                await self._write_ops()
                await self._write_metrics()
            except StoreUnavailable:
                if self._healthy:
                    log.warning("store_unreachable_buffering", pending=self.pending)
                self._healthy = False
                raise
            if not self._healthy:
                log.info("store_reachable_again")
            self._healthy = True
            self.flushes += 1

    async def _write_ops(self) -> None:
        while self._ops:
            run = list(itertools.islice(self._leading_status_changes(), _STATUS_BATCH))
            if len(run) > 1:
                try:
                    await self._store.set_agent_statuses(run)
                except StoreUnavailable:
                    raise
                except (StoreError, ValueError):
                    # One of them is refused (the call is one transaction): write
                    # them one by one below, so only that one is dropped.
                    pass
                else:
                    for _ in run:
                        self._ops.popleft()
                    continue
                for _ in run:
                    await self._write_one()
                continue
            await self._write_one()

    def _leading_status_changes(self) -> Iterator[StatusChange]:
        for op in self._ops:
            if not isinstance(op, StatusChange):
                return
            yield op

    async def _write_one(self) -> None:
        op = self._ops[0]
        try:
            if isinstance(op, StatusChange):
                await self._store.set_agent_status(op.agent_id, op.status, op.pid, op.metadata)
            else:
                await self._store.end_agent_lives_at(
                    [(op.agent_id, op.status, op.reason, op.ended_at)]
                )
        except StoreUnavailable:
            raise
        except (StoreError, ValueError) as exc:
            log.exception(
                "store_write_refused",
                op=type(op).__name__,
                agent_id=op.agent_id,
                error=str(exc),
            )
        self._ops.popleft()

    async def _write_metrics(self) -> None:
        """Send the unsent batch again if there is one, then one batch of what is pending."""
        if self._unsent is not None:
            await self._send_unsent()
        if self._samples or self._counters:
            self._seal_batch()
            await self._send_unsent()

    def _seal_batch(self) -> None:
        """Everything pending becomes the next numbered batch."""
        self._batch_seq += 1
        counters = [
            MetricsRecord(
                agent_id=agent_id,
                llm_calls=counter.llm_calls,
                locations_marked=counter.locations_marked,
                last_activity_at=counter.last_activity_at,
            )
            for agent_id, counter in self._counters.items()
        ]
        self._unsent = (BatchId(self._writer_id, self._batch_seq), self._samples, counters)
        self._samples, self._counters = deque(), {}

    async def _send_unsent(self) -> None:
        assert self._unsent is not None
        batch_id, samples, counters = self._unsent
        batch = [*samples, *counters]
        try:
            inserted = await self._store.record_metrics(batch, batch_id)
        except StoreUnavailable:
            raise  # kept as it is, to be sent again
        except StoreError as exc:
            self._unsent = None
            log.exception("metrics_batch_refused", records=len(batch), error=str(exc))
            return
        self._unsent = None
        self.metrics_calls += 1
        if inserted is None:
            log.info("metrics_batch_already_recorded", batch=batch_id.seq, records=len(batch))
