"""The agent inside one document: sync, watch, extract, mark, report.

One :class:`Agent` per worker process. Its long-lived services run in one task
group: the :class:`~worker.connection.DocumentConnection`, the awareness renewal,
the extraction loop (debounced, one batch at a time), the metrics timer and the
abandonment watch. Reports go to a :class:`~worker.reporting.Reporter` (the
manager's pipe, or the log when standalone).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from pycrdt import Doc

from worker.backoff import Backoff
from worker.config import AGENT_TOKEN_HEADER, WorkerSettings
from worker.connection import DocumentConnection
from worker.document import DocumentView, PendingSentence
from worker.marks import PlaceLike
from worker.metrics import LlmTimings, ResourceSampler
from worker.presence import Presence
from worker.protocol import Activity, Connected, Error, LlmCall, LocationMarked, Metrics
from worker.reporting import Reporter
from worker.trigger import Debouncer

if TYPE_CHECKING:
    from worker.extract import Extractor

__all__ = ["Agent"]

log = structlog.get_logger(__name__)

#: At most one ``activity`` (kind="edit") report per this many seconds.
EDIT_REPORT_INTERVAL_S = 1.0


class Agent:
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
        self._presence = Presence(self._doc)
        self._view = DocumentView(
            self._doc,
            settings.ydoc_fragment,
            on_remote_change=self._on_remote_change,
            on_sentence_end=self._on_sentence_end,
        )
        token = settings.docserver_agent_token
        self._connection = DocumentConnection(
            self._doc,
            self._presence,
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
        self._processed: set[str] = set()
        self._llm_timings = LlmTimings()
        self._last_edit_report = -math.inf
        self._task_group: TaskGroup | None = None
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

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Work in the document until cancelled or :meth:`stop` is called."""
        if self._task_group is not None:
            raise RuntimeError("Agent already running")
        if self._extractor is None and self._settings.resolved_extractor() == "llm":
            # Not preloaded by the manager's template (a gazetteer-only environment):
            # import the client (about a second) without stalling the event loop.
            await anyio.to_thread.run_sync(_import_llm_client)
        extractor = self._extractor or self._make_extractor()
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                await tg.start(self._presence.awareness.start)
                await tg.start(self._connection.run)
                tg.start_soon(self._extraction_loop, extractor)
                tg.start_soon(self._metrics_loop)
                tg.start_soon(self._abandonment_loop)
                task_status.started()
        finally:
            self._task_group = None
            self._view.close()
            with anyio.move_on_after(2, shield=True):
                await extractor.aclose()

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

    def _on_llm_call(self, *, response_time_ms: float, ok: bool) -> None:
        self._llm_timings.add(response_time_ms)
        self._reporter.report(LlmCall(response_time_ms=max(0.0, response_time_ms), ok=ok))

    async def _extraction_loop(self, extractor: Extractor) -> None:
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
            pending = self._view.take_pending(self._processed)
            if pending:
                await self._process(extractor, pending)
            self.batches_done += 1

    async def _process(self, extractor: Extractor, pending: list[PendingSentence]) -> None:
        log.info("extracting", sentences=len(pending))
        try:
            places = await extractor.extract([p.text for p in pending])
        except Exception as exc:
            # The extractor is a seam to foreign code (LLM client, network): report
            # and carry on; the sentences stay unprocessed and come back on an edit.
            log.exception("extraction_failed", sentences=len(pending))
            self._reporter.report(Error(message=f"extraction failed: {exc!r}"[:2000]))
            return
        by_sentence: dict[int, list[PlaceLike]] = {}
        for place in places:
            if 0 <= place.sentence_index < len(pending):
                by_sentence.setdefault(place.sentence_index, []).append(place)
            else:
                log.warning("place_dropped", reason="bad sentence_index", place=place.text)
        found: Sequence[tuple[PendingSentence, Sequence[PlaceLike]]] = [
            (sentence, by_sentence.get(index, [])) for index, sentence in enumerate(pending)
        ]
        applied, done = self._view.apply(found)
        self._processed |= done
        for mark in applied:
            log.info(
                "place_marked",
                text=mark.text,
                place_name=mark.place.name,
                color_index=mark.attrs["colorIndex"],
                coord_source=mark.place.coord_source,
            )
            self._reporter.report(
                LocationMarked(place_name=mark.place.name, coord_source=mark.place.coord_source)
            )

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
        idle_s = self._settings.idle_timeout_ms / 1000
        period = min(1.0, max(0.05, idle_s / 4))
        human_seen_at: float | None = None
        reported = False
        while True:
            await anyio.sleep(period)
            synced_at = self._connection.synced_at
            if synced_at is None:
                continue
            now = anyio.current_time()
            if self._presence.humans():
                human_seen_at, reported = now, False
                continue
            since = max(synced_at, human_seen_at or synced_at)
            if not reported and now - since >= idle_s:
                reported = True
                log.info("document_abandoned", idle_s=round(now - since, 1))
                self._reporter.report(Activity(kind="abandoned"))


def _import_llm_client() -> None:
    import worker.extract.llm  # noqa: F401  (imports openai)
