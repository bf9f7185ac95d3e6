"""The manager's side of the extraction memory: hand it to each life, store what comes back.

Workers never touch the database (invariant 6). When a life starts,
:meth:`MemoryKeeper.hand_over` reads the document's memory
(``load_extraction_memory``) and sends it over the worker's pipe in
:class:`~worker.protocol.MemoryHandover` parts; the worker extracts nothing new
before the last part (or its ``MEMORY_WAIT_S``) so it never pays for what an
earlier life, or another manager, already paid for. The worker's
:class:`~worker.protocol.ExtractionReport` messages are merged per document and
written about once a second by :meth:`MemoryKeeper.run` (``record_extractions``),
like the :class:`~manager.store.writer.StoreWriter` does for metrics: buffered while
the database is away (bounded), retried with backoff, a final flush on shutdown.

Entries are idempotent (a sentence's row is replaced, never added twice); the
hourly cost counters are sums, so a report whose answer was lost with the
connection may be counted twice in ``extraction_usage_hourly``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc
import pydantic
import structlog

from manager.errors import StoreError, StoreUnavailable
from worker.protocol import ExtractionReport, MemoryEntry, MemoryHandover, Message

if TYPE_CHECKING:
    from manager.ops.telemetry import ManagerMetrics
    from manager.store.base import Store

__all__ = ["MemoryKeeper", "MemoryPeer"]

log = structlog.get_logger(__name__)

#: A hand-over part holds about this many bytes of entries (the pipe takes 64 KiB).
_PART_BYTES = 24 * 1024
#: How long reading a document's memory may take before the life goes on without it.
_LOAD_TIMEOUT_S = 5.0
_USAGE = ("sentences_sent", "cache_hits", "prompt_tokens", "completion_tokens", "failures")


class MemoryPeer(Protocol):
    """The worker end the keeper talks to (a :class:`~manager.workers.process.WorkerProcess`)."""

    document_id: str

    async def send_when_ready(self, message: Message) -> bool: ...


@dataclass(slots=True)
class _Pending:
    entries: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    usage: dict[str, int] = field(default_factory=dict)

    def size(self) -> int:
        return len(self.entries) + len(self.seen)


class MemoryKeeper:
    """Hands each new life its document's memory and writes what lives report back
    (the module docstring says how)."""

    def __init__(
        self,
        store: Store,
        *,
        cap: int = 20_000,
        retention: timedelta = timedelta(days=30),
        flush_interval_s: float = 1.0,
        prune_interval_s: float = 3600.0,
        max_pending: int = 200_000,
        metrics: ManagerMetrics | None = None,
    ) -> None:
        self._store = store
        self._cap = cap
        self._retention = retention
        self._flush_interval_s = flush_interval_s
        self._prune_interval_s = prune_interval_s
        self._max_pending = max_pending
        self._metrics = metrics
        self._pending: dict[str, _Pending] = {}
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self._running = False
        #: Reports taken and rows stored (for tests and logs).
        self.reports = 0
        self.stored = 0

    # --- a life starts -----------------------------------------------------------------

    async def hand_over(self, worker: MemoryPeer) -> None:
        """Send the document's memory to a new life (an empty, incomplete one if the
        database cannot say)."""
        document_id = worker.document_id
        rows: list[dict[str, Any]] = []
        complete = True
        try:
            with anyio.fail_after(_LOAD_TIMEOUT_S):
                rows = await self._store.load_extraction_memory(document_id, self._cap)
        except (StoreError, TimeoutError) as exc:
            log.warning("extraction_memory_unreadable", document_id=document_id, error=str(exc))
            complete = False
        entries = _entries(rows, document_id)
        parts = _parts(entries)
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            message = MemoryHandover(entries=part, last=last, complete=complete)
            if not await worker.send_when_ready(message):
                return  # the worker is gone
        log.info("extraction_memory_handed_over", document_id=document_id, sentences=len(entries))

    # --- reports come in ---------------------------------------------------------------

    def take(self, document_id: str, report: ExtractionReport) -> None:
        """Buffer one report (never blocks)."""
        self.reports += 1
        pending = self._pending.setdefault(document_id, _Pending())
        for entry in report.entries:
            known = pending.entries.get((entry.extractor, entry.key))
            if known is not None and known["status"] == "done" and entry.status != "done":
                continue
            pending.entries[(entry.extractor, entry.key)] = entry.model_dump(mode="json")
        pending.seen.update(report.seen)
        for name in _USAGE:
            value = getattr(report, name)
            if value:
                pending.usage[name] = pending.usage.get(name, 0) + value
        if report.given_up:
            pending.usage["given_up"] = pending.usage.get("given_up", 0) + report.given_up
        pending.usage["pending"] = report.pending
        if self._metrics is not None:
            if report.failures:
                self._metrics.llm_sentences_failed.inc(report.failures)
            if report.given_up:
                self._metrics.llm_sentences_given_up.inc(report.given_up)
            if report.sentences_sent:
                self._metrics.llm_sentences_sent.inc(report.sentences_sent)
            if report.cache_hits:
                self._metrics.llm_cache_hits.inc(report.cache_hits)
        self._bound()
        if report.entries:
            self._wake.set()

    def _bound(self) -> None:
        """Past ``max_pending`` rows, forget the "seen again" touches first (only the
        retention clock of those rows loses), then the oldest documents' batches."""
        total = sum(p.size() for p in self._pending.values())
        if total <= self._max_pending:
            return
        for pending in self._pending.values():
            total -= len(pending.seen)
            pending.seen.clear()
        while total > self._max_pending and len(self._pending) > 1:
            document_id = next(iter(self._pending))
            dropped = self._pending.pop(document_id)
            total -= dropped.size()
            log.warning(
                "extraction_reports_dropped", document_id=document_id, entries=dropped.size()
            )

    @property
    def pending(self) -> int:
        return sum(p.size() for p in self._pending.values())

    # --- writing -----------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Write every ``flush_interval_s`` until cancelled; prune now and then."""
        if self._running:
            raise RuntimeError("MemoryKeeper.run() called twice")
        self._running = True
        task_status.started()
        failures = 0
        next_prune = anyio.current_time() + min(60.0, self._prune_interval_s)
        try:
            while True:
                with anyio.move_on_after(self._flush_interval_s):
                    await self._wake.wait()
                self._wake = anyio.Event()
                try:
                    await self.flush()
                    if anyio.current_time() >= next_prune:
                        next_prune = anyio.current_time() + self._prune_interval_s
                        await self._prune()
                except StoreUnavailable as exc:
                    delay = min(30.0, 0.5 * 2**failures) * random.uniform(0.8, 1.0)
                    failures += 1
                    log.warning("extraction_reports_buffered", error=str(exc), pending=self.pending)
                    await anyio.sleep(delay)
                else:
                    failures = 0
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5.0):
                try:
                    await self.flush()
                except StoreError as exc:
                    log.warning("extraction_final_flush_failed", error=str(exc))

    async def flush(self) -> None:
        """Write every buffered report now (raises :class:`StoreUnavailable`; what
        failed stays buffered)."""
        async with self._lock:
            while self._pending:
                document_id = next(iter(self._pending))
                pending = self._pending.pop(document_id)
                try:
                    stored = await self._store.record_extractions(
                        document_id,
                        list(pending.entries.values()),
                        sorted(pending.seen),
                        pending.usage,
                        cap=self._cap,
                        retention=self._retention,
                    )
                except StoreUnavailable:
                    self._merge_back(document_id, pending)
                    raise
                except StoreError as exc:
                    log.exception(
                        "extraction_report_refused", document_id=document_id, error=str(exc)
                    )
                    continue
                self.stored += stored

    def _merge_back(self, document_id: str, pending: _Pending) -> None:
        newer = self._pending.pop(document_id, None)
        self._pending[document_id] = pending
        if newer is not None:
            pending.entries.update(newer.entries)
            pending.seen |= newer.seen
            for name, value in newer.usage.items():
                if name == "pending":
                    pending.usage[name] = value
                else:
                    pending.usage[name] = pending.usage.get(name, 0) + value

    async def _prune(self) -> None:
        deleted = await self._store.prune_extraction_memory(self._retention, 5000)
        if deleted:
            log.info("extraction_memory_pruned", deleted=deleted)


def _entries(rows: list[dict[str, Any]], document_id: str) -> list[MemoryEntry]:
    entries: list[MemoryEntry] = []
    for row in rows:
        try:
            entries.append(MemoryEntry.model_validate(row))
        except pydantic.ValidationError:
            log.warning("extraction_memory_row_skipped", document_id=document_id)
    return entries


def _parts(entries: list[MemoryEntry]) -> list[list[MemoryEntry]]:
    parts: list[list[MemoryEntry]] = [[]]
    size = 0
    for entry in entries:
        length = len(entry.model_dump_json()) + 1
        if parts[-1] and size + length > _PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(entry)
        size += length
    return parts
