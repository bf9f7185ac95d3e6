"""The agent inside one document: sync, watch, extract, mark, report.

One :class:`Agent` per worker process. Its long-lived services run in one task
group: the :class:`~worker.connection.DocumentConnection`, the awareness renewal,
the extraction loop (debounced: it hands finished sentences to the
:class:`~worker.extraction.SentenceRouter`), the router's two extraction lanes, the
metrics timer and, for third-party servers only (``ABANDON_AFTER_MS``), the
abandonment watch. Reports go to a :class:`~worker.reporting.Reporter` (the
manager's pipe, or the log when standalone).
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from pycrdt import Doc

from worker.awareness import AgentAwareness
from worker.backoff import Backoff
from worker.config import AGENT_TOKEN_HEADER, WorkerSettings
from worker.connection import DocumentConnection
from worker.document import DocumentView
from worker.errors import Fenced
from worker.extraction import SentenceRouter
from worker.metrics import LlmTimings, ResourceSampler
from worker.protocol import Activity, Connected, LlmCall, MemoryHandover, Metrics
from worker.reporting import Reporter
from worker.trigger import Debouncer

if TYPE_CHECKING:
    from worker.extract import Extractor

__all__ = ["Agent"]

log = structlog.get_logger(__name__)

#: At most one ``activity`` (kind="edit") report per this many seconds.
EDIT_REPORT_INTERVAL_S = 1.0


class Agent:
    """One document's agent: its ``Doc``, connection, view, router and reports."""

    def __init__(
        self,
        settings: WorkerSettings,
        document_id: str,
        *,
        agent_id: str,
        reporter: Reporter,
        extractor: Extractor | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._settings = settings
        self._document_id = document_id
        self._agent_id = agent_id
        self._reporter = reporter
        self._extractor = extractor
        self._started = time.monotonic()
        self._doc = Doc()
        self._awareness = AgentAwareness(self._doc)
        self._view = DocumentView(
            self._doc,
            settings.ydoc_fragment,
            on_remote_change=self._on_remote_change,
            on_sentence_end=self._on_sentence_end,
        )
        token = settings.docserver_agent_token
        self._connection = DocumentConnection(
            self._doc,
            self._awareness,
            settings.document_url(document_id),
            headers={AGENT_TOKEN_HEADER: token.get_secret_value()} if token else None,
            on_synced=self._on_synced,
            backoff=backoff,
        )
        sentence_end_ms = settings.sentence_end_debounce_ms
        self._debouncer = Debouncer(
            debounce_s=settings.sentence_debounce_ms / 1000,
            max_wait_s=settings.sentence_max_wait_ms / 1000,
            sentence_end_s=None if sentence_end_ms < 0 else sentence_end_ms / 1000,
        )
        self._changed = anyio.Event()
        self._router: SentenceRouter | None = None
        #: Set when the manager's hand-over of the extraction memory is complete.
        self._memory_loaded = anyio.Event()
        self._handed_over: list[MemoryHandover] = []
        self._first_pass_taken = False
        self._llm_timings = LlmTimings()
        self._last_edit_report = -math.inf
        self._task_group: TaskGroup | None = None
        #: The docserver fenced this agent (a newer life holds the document).
        self.fenced = False
        #: Set after the first sync with the server (for tests and the standalone log).
        self.synced = anyio.Event()
        #: Debounced batches taken so far (a batch may hold no new sentence).
        self.batches_done = 0

    @property
    def doc(self) -> Doc:
        return self._doc

    @property
    def connection(self) -> DocumentConnection:
        return self._connection

    def hand_over(self, message: MemoryHandover) -> None:
        """A part of the document's extraction memory, from the manager."""
        if self._router is not None:
            self._router.load(message.entries)
        else:
            self._handed_over.append(message)
        if message.last:
            if not message.complete:
                log.warning("extraction_memory_incomplete")
            self._memory_loaded.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Work in the document until cancelled, :meth:`stop` is called, or the docserver
        fences this agent (a newer life took the document: reported, then it returns)."""
        if self._task_group is not None:
            raise RuntimeError("Agent already running")
        if self._extractor is None and self._settings.resolved_extractor() == "llm":
            # Not preloaded by the manager's template (a gazetteer-only environment):
            # import the client (about a second) without stalling the event loop.
            await anyio.to_thread.run_sync(_import_llm_client)
        extractor = self._extractor or self._make_extractor()
        self._router = self._make_router(extractor)
        for handed in self._handed_over:
            self._router.load(handed.entries)
        self._handed_over.clear()
        try:
            await self._work(task_status)
        except* Fenced:
            # A newer life of this document holds it: report, and end without retrying.
            self._reporter.report(Activity(kind="fenced"))
            self.fenced = True
        finally:
            self._task_group = None
            self._view.close()
            with anyio.move_on_after(2, shield=True):
                await extractor.aclose()

    async def _work(self, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            await tg.start(self._awareness.awareness.start)
            await tg.start(self._connection.run)
            tg.start_soon(self._extraction_loop)
            tg.start_soon(functools.partial(self._router.run_lane, urgent=True))
            tg.start_soon(functools.partial(self._router.run_lane, urgent=False))
            tg.start_soon(self._metrics_loop)
            if self._settings.abandon_after_ms > 0:
                tg.start_soon(self._abandonment_loop)
            task_status.started()

    async def stop(self, timeout_s: float = 1.5) -> None:
        """Leave the document (null awareness, close the socket), then stop :meth:`run`."""
        tg = self._task_group
        with anyio.move_on_after(timeout_s, shield=True):
            await self._connection.leave()
        if tg is not None:
            tg.cancel_scope.cancel()

    # --- document changes ----------------------------------------------------

    def _on_sentence_end(self) -> None:
        self._debouncer.sentence_ended(anyio.current_time())
        self._changed.set()

    def _on_remote_change(self) -> None:
        now = anyio.current_time()
        self._debouncer.touch(now)
        self._changed.set()
        if self._connection.synced_at is not None and (
            now - self._last_edit_report >= EDIT_REPORT_INTERVAL_S
        ):
            self._last_edit_report = now
            self._reporter.report(Activity(kind="edit"))

    def _on_synced(self) -> None:
        if self.synced.is_set():
            return
        self.synced.set()
        sync_ms = (time.monotonic() - self._started) * 1000
        self._reporter.report(
            Connected(
                document_id=self._document_id,
                agent_id=self._agent_id,
                pid=os.getpid(),
                sync_ms=sync_ms,
            )
        )

    # --- extraction ----------------------------------------------------------

    def _make_extractor(self) -> Extractor:
        from worker.extract import make_extractor

        return make_extractor(self._settings, on_llm_call=self._on_llm_call)

    def _make_router(self, extractor: Extractor) -> SentenceRouter:
        fallback = None
        if extractor.version is not None:
            from worker.extract.gazetteer import load_gazetteer
            from worker.extract.gazetteer_extractor import GazetteerExtractor

            fallback = GazetteerExtractor(load_gazetteer())
        return SentenceRouter(
            self._view,
            extractor,
            self._reporter,
            max_sentences=self._settings.llm_batch_max_sentences,
            max_chars=self._settings.llm_batch_max_chars,
            fallback=fallback,
        )

    def _on_llm_call(self, *, response_time_ms: float, ok: bool) -> None:
        self._llm_timings.add(response_time_ms)
        self._reporter.report(LlmCall(response_time_ms=max(0.0, response_time_ms), ok=ok))

    async def _extraction_loop(self) -> None:
        router = self._router
        assert router is not None
        await self._wait_for_memory()
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            while True:
                due = self._debouncer.due_at()
                if due is None or due <= anyio.current_time():
                    break
                # Touches meanwhile move ``due`` later; a typed '.' moves it earlier.
                with anyio.move_on_after(due - anyio.current_time()):
                    await self._changed.wait()
                if self._changed.is_set():
                    self._changed = anyio.Event()
            self._debouncer.take()
            pending = self._view.take_pending()
            if pending:
                # The first take after the sync is the document as it was: the
                # background pass. Everything later was typed now.
                router.route(pending, urgent=self._first_pass_taken)
                self._first_pass_taken = True
            self.batches_done += 1

    async def _wait_for_memory(self) -> None:
        """Extract nothing before the manager handed over what is known already."""
        wait_s = self._settings.memory_wait_s
        router = self._router
        if wait_s <= 0 or router is None or router.memory.extractor == "offline":
            return
        with anyio.move_on_after(wait_s):
            await self._memory_loaded.wait()
        if not self._memory_loaded.is_set():
            log.warning("extraction_memory_not_handed_over", waited_s=wait_s)
        else:
            log.info("extraction_memory_loaded", sentences=len(router.memory))

    # --- timers --------------------------------------------------------------

    async def _metrics_loop(self) -> None:
        sampler = ResourceSampler()
        while True:
            await anyio.sleep(self._settings.metrics_interval_s)
            latency_ms = await self._connection.latency_ms()
            sample = sampler.sample()
            self._reporter.report(
                Metrics(
                    memory_mb=sample.rss_mb,
                    pss_mb=sample.pss_mb,
                    uss_mb=sample.uss_mb,
                    cpu_percent=sample.cpu_percent,
                    websocket_latency_ms=latency_ms,
                    llm_response_time_ms=self._llm_timings.take_mean(),
                )
            )

    async def _abandonment_loop(self) -> None:
        idle_s = self._settings.abandon_after_ms / 1000
        period = min(1.0, max(0.05, idle_s / 4))
        human_seen_at: float | None = None
        reported = False
        while True:
            await anyio.sleep(period)
            synced_at = self._connection.synced_at
            if synced_at is None:
                continue
            now = anyio.current_time()
            if self._awareness.humans():
                human_seen_at, reported = now, False
                continue
            since = max(synced_at, human_seen_at or synced_at)
            if not reported and now - since >= idle_s:
                reported = True
                log.info("document_abandoned", idle_s=round(now - since, 1))
                self._reporter.report(Activity(kind="abandoned"))


def _import_llm_client() -> None:
    import worker.extract.llm  # noqa: F401  (imports openai)
