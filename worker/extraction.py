"""From finished sentences to marks: memory first, the model for the rest, never dark.

:class:`SentenceRouter` takes the occurrences the :class:`~worker.document.DocumentView`
hands out. An occurrence whose text the memory knows is marked from the stored
result at once (no model call); the others wait for their key's result, which one
of two *lanes* fetches: the urgent lane serves what people type, the background lane
the first pass over the document (so a long document's first pass never delays a
typed sentence by more than the model's own latency). Each lane sends one bounded
batch at a time (:class:`~worker.memory.ExtractionQueue`).

A failed batch is not "no places": its sentences go back to the queue with a
backoff and are remembered as ``retry`` (the next life retries them); a refused
batch is split so only the offending sentence is given up (``failed``). While the
model fails, the offline gazetteer marks the waiting occurrences meanwhile
(``coordSource: gazetteer``); the model's later pass adds what it finds on text
not marked yet.

Every new result, reuse and cost goes to the manager in an
:class:`~worker.protocol.ExtractionReport`, which stores it for later lives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import structlog

from worker.document import DocumentView, PendingSentence
from worker.extract.base import Extraction, Place
from worker.memory import (
    ExtractionMemory,
    ExtractionQueue,
    Failure,
    QueuedSentence,
    find_remembered,
)
from worker.protocol import ExtractionReport, LocationMarked, MemoryEntry, RememberedPlace
from worker.reporting import Reporter

if TYPE_CHECKING:
    from worker.extract import Extractor
    from worker.extract.gazetteer_extractor import GazetteerExtractor

__all__ = ["SentenceRouter"]

log = structlog.get_logger(__name__)

#: An extraction report is cut at about this many bytes (the pipe takes 64 KiB).
_REPORT_BYTES = 24 * 1024


class SentenceRouter:
    def __init__(
        self,
        view: DocumentView,
        extractor: Extractor,
        reporter: Reporter,
        *,
        max_sentences: int,
        max_chars: int,
        fallback: GazetteerExtractor | None = None,
    ) -> None:
        self._view = view
        self._extractor = extractor
        self._reporter = reporter
        self._fallback = fallback
        version = extractor.version
        #: Reported to the manager only for an extractor whose results cost something.
        self._remembered = version is not None
        self.memory = ExtractionMemory(version or "offline")
        self.queue = ExtractionQueue(max_sentences=max_sentences, max_chars=max_chars)
        #: key -> occurrences waiting for that key's result, by (block, start).
        self._waiting: dict[str, dict[tuple[int, int], PendingSentence]] = {}
        self._hits: set[str] = set()
        self._changed = anyio.Event()
        #: The last batch failed transiently: the gazetteer marks meanwhile.
        self.model_failing = False
        self._entries: list[MemoryEntry] = []
        self._seen: list[str] = []
        self._usage = {
            "sentences_sent": 0,
            "cache_hits": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "failures": 0,
            "given_up": 0,
        }

    # --- occurrences in ------------------------------------------------------------

    def route(self, pending: Sequence[PendingSentence], *, urgent: bool) -> None:
        """Mark what memory knows now; queue the rest (``urgent``: typed just now)."""
        now = anyio.current_time()
        found: list[tuple[PendingSentence, Sequence[Place]]] = []
        meanwhile: list[PendingSentence] = []
        for occurrence in pending:
            key = occurrence.key
            entry = self.memory.get(key)
            if entry is not None and entry.status == "done":
                found.append((occurrence, _places(occurrence.text, entry.places)))
                if key not in self._hits:
                    self._hits.add(key)
                    self._usage["cache_hits"] += 1
                    self._seen.append(key)
                continue
            if entry is not None and entry.status == "failed":
                meanwhile.append(occurrence)
                continue
            if len(occurrence.text) > self.queue.max_chars:
                self._give_up(key, attempts=0, error="sentence longer than LLM_BATCH_MAX_CHARS")
                meanwhile.append(occurrence)
                continue
            self._waiting.setdefault(key, {})[(occurrence.block_id, occurrence.start)] = occurrence
            attempts = entry.attempts if entry is not None else 0
            self.queue.want(key, occurrence.text, urgent=urgent, now=now, attempts=attempts)
            if self.model_failing:
                meanwhile.append(occurrence)
        self._mark(found + self._offline(meanwhile))
        self._wake()
        self.flush_report()

    def load(self, entries: Sequence[MemoryEntry]) -> None:
        self.memory.load(entries)

    # --- the lanes -----------------------------------------------------------------

    async def run_lane(self, *, urgent: bool) -> None:
        """Send this lane's batches, one at a time, until cancelled."""
        while True:
            now = anyio.current_time()
            batch = self.queue.take(now, urgent=urgent)
            if not batch:
                changed = self._changed
                due = self.queue.next_due(urgent=urgent)
                with anyio.move_on_after(None if due is None else max(0.0, due - now)):
                    await changed.wait()
                continue
            texts = [item.text for item in batch]
            log.info("extracting", sentences=len(batch), urgent=urgent)
            try:
                result = await self._extractor.extract(texts, background=not urgent)
            except Exception as exc:
                # Extractors return their failures (the LLM client's errors become a
                # Failure); anything else an extractor raises is a bug or an error
                # nobody translated: logged with its traceback, and the batch fails
                # like a failed call instead of ending the lane.
                log.exception("extraction_failed", sentences=len(batch))
                result = Extraction(failure=Failure(f"{type(exc).__name__}"))
            self._count(result)
            if result.failure is None:
                self._succeeded(batch, result)
            else:
                self._failed(batch, result.failure)
            self.flush_report()

    def _succeeded(self, batch: Sequence[QueuedSentence], result: Extraction) -> None:
        self.model_failing = False
        by_index: dict[int, list[Place]] = {}
        for place in result.places:
            by_index.setdefault(place.sentence_index, []).append(place)
        found: list[tuple[PendingSentence, Sequence[Place]]] = []
        keys: list[str] = []
        for index, item in enumerate(batch):
            key = item.key
            keys.append(key)
            remembered = _remember(by_index.get(index, []))
            entry = self.memory.done(key, remembered)
            self._entries.append(entry)
            self._hits.add(key)
            for occurrence in self._waiting.pop(key, {}).values():
                found.append((occurrence, _places(occurrence.text, remembered)))
        self.queue.done(keys)
        self._mark(found)

    def _failed(self, batch: Sequence[QueuedSentence], failure: Failure) -> None:
        items = list(batch)
        now = anyio.current_time()
        given_up = {item.key for item in self.queue.failed(items, failure, now)}
        if failure.spent:
            self._usage["failures"] += len(items)
        if not failure.rejected:
            self.model_failing = True
        meanwhile: list[PendingSentence] = []
        for item in items:
            key = item.key
            if key in given_up:
                self._give_up(key, attempts=item.attempts, error=failure.reason)
                meanwhile.extend(self._waiting.pop(key, {}).values())
                continue
            if failure.spent and not (failure.rejected and len(items) > 1):
                entry = self.memory.failed(
                    key,
                    attempts=item.attempts,
                    error=failure.reason,
                    given_up=False,
                )
                self._entries.append(entry)
            if self.model_failing:
                meanwhile.extend(self._waiting.get(key, {}).values())
        log.warning(
            "extraction_not_done",
            reason=failure.reason,
            sentences=len(items),
            given_up=len(given_up),
            gazetteer_meanwhile=len(meanwhile) if self._fallback is not None else 0,
        )
        self._mark(self._offline(meanwhile))

    def _give_up(self, key: str, *, attempts: int, error: str) -> None:
        log.warning("llm_sentence_given_up", key=key, attempts=attempts, error=error)
        self._usage["given_up"] += 1
        self._entries.append(self.memory.failed(key, attempts=attempts, error=error, given_up=True))

    def _count(self, result: Extraction) -> None:
        self._usage["sentences_sent"] += result.sentences_sent
        self._usage["prompt_tokens"] += result.prompt_tokens
        self._usage["completion_tokens"] += result.completion_tokens

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # --- marks and reports ---------------------------------------------------------

    def _offline(
        self, occurrences: Sequence[PendingSentence]
    ) -> list[tuple[PendingSentence, Sequence[Place]]]:
        if self._fallback is None or not occurrences:
            return []
        places = self._fallback.find([o.text for o in occurrences])
        by_index: dict[int, list[Place]] = {}
        for place in places:
            by_index.setdefault(place.sentence_index, []).append(place)
        return [(o, by_index.get(i, [])) for i, o in enumerate(occurrences)]

    def _mark(self, found: Sequence[tuple[PendingSentence, Sequence[Place]]]) -> None:
        found = [(occurrence, places) for occurrence, places in found if places]
        if not found:
            return
        applied, _ = self._view.apply(found)
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

    def flush_report(self) -> None:
        """Send what changed since the last report (in parts under the pipe's limit)."""
        if not self._remembered:
            self._entries.clear()
            self._seen.clear()
            return
        usage = self._usage
        if not (self._entries or self._seen or any(usage.values())):
            return
        entries, self._entries = self._entries, []
        seen, self._seen = self._seen, []
        first = True
        while first or entries or seen:
            part_entries: list[MemoryEntry] = []
            size = 0
            while entries and (size < _REPORT_BYTES or not part_entries):
                entry = entries.pop(0)
                size += len(entry.model_dump_json()) + 1
                part_entries.append(entry)
            room = max(0, (_REPORT_BYTES - size) // 36)
            part_seen, seen = seen[:room], seen[room:]
            counters = usage if first else dict.fromkeys(usage, 0)
            self._reporter.report(
                ExtractionReport(
                    entries=part_entries,
                    seen=part_seen,
                    pending=len(self.queue),
                    **counters,
                )
            )
            first = False
        self._usage = dict.fromkeys(usage, 0)


def _remember(places: Sequence[Place]) -> list[RememberedPlace]:
    unique: dict[str, RememberedPlace] = {}
    for place in places:
        if place.text not in unique and len(unique) < 50:
            unique[place.text] = RememberedPlace(
                text=place.text[:200],
                name=place.name[:300],
                lat=place.lat,
                lng=place.lng,
                coord_source=place.coord_source[:40],
                geonames_id=None if place.geonames_id is None else place.geonames_id[:40],
            )
    return list(unique.values())


def _places(sentence: str, remembered: Sequence[RememberedPlace]) -> list[Place]:
    return [
        Place(0, start, p.text, p.name, p.lat, p.lng, p.coord_source, p.geonames_id)
        for start, p in find_remembered(sentence, remembered)
    ]
