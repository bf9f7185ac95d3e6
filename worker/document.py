"""The agent's view of the document: which text changed, and applying marks.

The ``XmlFragment`` is laid out as y-prosemirror does: elements per node, an
``XmlText`` per text run; inline nodes (hard breaks, images) split a paragraph
into several runs, each handled on its own. Remote transactions (anything not
carrying :data:`AGENT_ORIGIN`) mark the runs they touch as dirty; the agent then
takes the finished sentences of the dirty runs that were never processed, and
later applies the extracted places in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pycrdt import Doc, XmlElement, XmlFragment, XmlText

from worker.marks import PlaceLike, PlannedMark, geo_mark_attrs, plan_marks
from worker.runs import MARK_NAME, TextRun
from worker.sentences import finished_sentences, sentence_key

__all__ = ["AGENT_ORIGIN", "AppliedMark", "DocumentView", "PendingSentence"]

log = structlog.get_logger(__name__)

#: Origin of the agent's own transactions; changes with it never trigger extraction.
AGENT_ORIGIN = "docagents-agent"


@dataclass(frozen=True, slots=True)
class PendingSentence:
    """A finished sentence not processed yet, as it read when it was taken."""

    run_id: int
    start: int
    text: str
    key: str


@dataclass(frozen=True, slots=True)
class AppliedMark:
    text: str
    place: PlaceLike
    attrs: dict[str, Any]


class DocumentView:
    def __init__(
        self, doc: Doc, fragment_name: str, *, on_remote_change: Callable[[], None]
    ) -> None:
        self._doc = doc
        self._fragment = doc.get(fragment_name, type=XmlFragment)
        self._on_remote_change = on_remote_change
        self._dirty: set[int] = set()
        self._next_color = 0
        self._subscription = self._fragment.observe_deep(self._observe)

    @property
    def has_dirty_runs(self) -> bool:
        return bool(self._dirty)

    def close(self) -> None:
        self._fragment.unobserve(self._subscription)

    def runs(self) -> Iterator[XmlText]:
        """Every text run of the document, in document order."""
        yield from _runs_of(self._fragment)

    def take_pending(self, processed: set[str]) -> list[PendingSentence]:
        """Finished sentences of the dirty runs whose key is not in ``processed``."""
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return []
        pending: list[PendingSentence] = []
        seen: set[str] = set()
        with self._doc.transaction():
            for run in self.runs():
                run_id = hash(run)
                if run_id not in dirty:
                    continue
                text_run = TextRun.from_diff(run.diff())
                self._note_colors(text_run)
                for sentence in finished_sentences(text_run.text):
                    key = sentence_key(sentence.text)
                    if key in processed or key in seen:
                        continue
                    seen.add(key)
                    pending.append(PendingSentence(run_id, sentence.start, sentence.text, key))
        return pending

    def apply(
        self, found: Sequence[tuple[PendingSentence, Sequence[PlaceLike]]]
    ) -> tuple[list[AppliedMark], set[str]]:
        """Mark the places found, in one transaction.

        Returns the marks applied and the keys of the sentences that still read as
        they did (those count as processed; the others were edited meanwhile and
        come back through the edit).
        """
        applied: list[AppliedMark] = []
        done: set[str] = set()
        with self._doc.transaction(origin=AGENT_ORIGIN):
            runs = {hash(run): run for run in self.runs()}
            for pending, places in found:
                run = runs.get(pending.run_id)
                if run is None:
                    continue
                text_run = TextRun.from_diff(run.diff())
                self._note_colors(text_run)
                plan = plan_marks(text_run, pending.text, pending.start, places)
                if plan is None:
                    log.info("sentence_changed_before_marking", sentence=pending.text[:80])
                    continue
                done.add(pending.key)
                applied.extend(self._format(run, mark) for mark in plan)
        return applied, done

    def _format(self, run: XmlText, mark: PlannedMark) -> AppliedMark:
        attrs = geo_mark_attrs(mark.place, self._next_color)
        self._next_color += 1
        run.format(mark.y_start, mark.y_end, {MARK_NAME: attrs})
        return AppliedMark(mark.place.text, mark.place, attrs)

    def _note_colors(self, run: TextRun) -> None:
        if run.color_indexes:
            self._next_color = max(self._next_color, max(run.color_indexes) + 1)

    def _observe(self, events: list[Any]) -> None:
        if not events or events[0].transaction.origin == AGENT_ORIGIN:
            return
        for event in events:
            target = event.target
            if isinstance(target, XmlText):
                self._dirty.add(hash(target))
                continue
            for change in event.delta:
                inserted = change.get("insert")
                if isinstance(inserted, list):
                    for node in inserted:
                        self._dirty.update(hash(run) for run in _runs_of(node))
        self._on_remote_change()


def _runs_of(node: Any) -> Iterator[XmlText]:
    if isinstance(node, XmlText):
        yield node
    elif isinstance(node, XmlElement | XmlFragment):
        for child in node.children:
            yield from _runs_of(child)
