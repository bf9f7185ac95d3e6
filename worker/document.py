"""The agent's view of the document: which text changed, and applying marks.

The ``XmlFragment`` is laid out as y-prosemirror does: an element per node, an
``XmlText`` per text run; inline nodes (hard breaks, images) split a paragraph
into several runs. A *block* is an element holding text runs (a paragraph,
heading, ...): sentences are found in the block's text, marks are applied to the
run the place lies in. Remote transactions (anything not carrying
:data:`AGENT_ORIGIN`) mark the blocks they touch as dirty; the agent takes the
finished sentences of dirty blocks (every occurrence: the same sentence in two
paragraphs is two), looks their results up or extracts them, and applies the
places found in one transaction.

Finding a block by id walks the tree, and pycrdt makes that walk cost tens of
microseconds per block (milliseconds for a long document). The view therefore keeps
an index of the blocks, in document order, and walks again only after a change of
structure (nodes inserted or deleted anywhere): typing inside a paragraph, the
common edit, never walks. The index never holds a deleted node when it is read
(the deletion drops it first), and pycrdt's wrappers of deleted nodes must not be
used.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pycrdt import Doc, XmlElement, XmlFragment, XmlText

from worker.marks import PlaceLike, PlannedMark, geo_mark_attrs, plan_marks
from worker.runs import MARK_NAME, Block, TextRun
from worker.sentences import TERMINATORS as _TERMINATORS
from worker.sentences import finished_sentences, sentence_key

__all__ = ["AGENT_ORIGIN", "AppliedMark", "DocumentView", "PendingSentence"]

log = structlog.get_logger(__name__)

#: Origin of the agent's own transactions; changes with it never trigger extraction.
AGENT_ORIGIN = "docagents-agent"

_Node = XmlElement | XmlFragment


@dataclass(frozen=True, slots=True)
class PendingSentence:
    """One occurrence of a finished sentence, as it read when it was taken.

    ``key`` is the result key of its text (:func:`worker.sentences.sentence_key`):
    occurrences of the same text share it.
    """

    block_id: int
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
        self,
        doc: Doc,
        fragment_name: str,
        *,
        on_remote_change: Callable[[], None],
        on_sentence_end: Callable[[], None] | None = None,
    ) -> None:
        self._doc = doc
        self._fragment = doc.get(fragment_name, type=XmlFragment)
        self._on_remote_change = on_remote_change
        #: Called (before ``on_remote_change``) when a remote change inserted text
        #: holding a sentence terminator.
        self._on_sentence_end = on_sentence_end
        self._dirty: set[int] = set()
        #: block id -> block, in document order; None after a change of structure.
        self._blocks: dict[int, _Node] | None = None
        self._next_color = 0
        #: geoId -> exact text of every mark this agent applied.
        self._applied: dict[str, str] = {}
        self._subscription = self._fragment.observe_deep(self._observe)

    def close(self) -> None:
        self._fragment.unobserve(self._subscription)

    def take_pending(self, processed: Container[str] = frozenset()) -> list[PendingSentence]:
        """Every occurrence of a finished sentence in the dirty blocks, in document
        order, except those whose key is in ``processed``."""
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return []
        pending: list[PendingSentence] = []
        stale: list[tuple[XmlText, int, int]] = []
        for block_id, node in self._block_index().items():
            if block_id not in dirty:
                continue
            block, runs = _read_block(node)
            self._note_colors(block)
            for run, part in zip(runs, block.parts, strict=True):
                if run is not None and part is not None and self._applied:
                    stale.extend((run, s, e) for s, e in part.stale_marks(self._applied))
            for sentence in finished_sentences(block.text):
                key = sentence_key(sentence.text)
                if key in processed:
                    continue
                pending.append(PendingSentence(block_id, sentence.start, sentence.text, key))
        if stale:
            self._unmark(stale)
        return pending

    def _unmark(self, stale: list[tuple[XmlText, int, int]]) -> None:
        with self._doc.transaction(origin=AGENT_ORIGIN):
            for run, y_start, y_end in stale:
                run.format(y_start, y_end, {MARK_NAME: None})
        log.warning("stale_marks_removed", count=len(stale))

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
        wanted = {pending.block_id for pending, _ in found}
        with self._doc.transaction(origin=AGENT_ORIGIN):
            index = self._block_index()
            nodes = {block_id: index[block_id] for block_id in wanted if block_id in index}
            for pending, places in found:
                node = nodes.get(pending.block_id)
                if node is None:
                    continue
                block, runs = _read_block(node)
                self._note_colors(block)
                plan = plan_marks(block, pending.text, pending.start, places)
                if plan is None:
                    log.info("sentence_changed_before_marking", sentence=pending.text[:80])
                    continue
                done.add(pending.key)
                applied.extend(self._format(runs[mark.part], mark) for mark in plan)
        return applied, done

    def _format(self, run: XmlText | None, mark: PlannedMark) -> AppliedMark:
        assert run is not None  # plan_marks only plans on text parts
        attrs = geo_mark_attrs(mark.place, self._next_color)
        self._next_color += 1
        run.format(mark.y_start, mark.y_end, {MARK_NAME: attrs})
        self._applied[attrs["geoId"]] = mark.place.text
        return AppliedMark(mark.place.text, mark.place, attrs)

    def _note_colors(self, block: Block) -> None:
        colors = block.color_indexes
        if colors:
            self._next_color = max(self._next_color, max(colors) + 1)

    def _block_index(self) -> dict[int, _Node]:
        if self._blocks is None:
            self._blocks = {hash(node): node for node in _blocks_of(self._fragment)}
        return self._blocks

    def _observe(self, events: list[Any]) -> None:
        if not events:
            return
        if self._blocks is not None and any(
            not isinstance(event.target, XmlText) and event.delta for event in events
        ):
            self._blocks = None  # nodes inserted or deleted (by anyone)
        if events[0].transaction.origin == AGENT_ORIGIN:
            return
        sentence_end = False
        for event in events:
            target = event.target
            if isinstance(target, XmlText):
                parent = target.parent
                if parent is not None:
                    self._dirty.add(hash(parent))
                if self._on_sentence_end is not None and not sentence_end:
                    sentence_end = any(
                        isinstance(text := change.get("insert"), str)
                        and not _TERMINATORS.isdisjoint(text)
                        for change in event.delta
                    )
                continue
            if isinstance(target, XmlElement):
                self._dirty.add(hash(target))
            for change in event.delta:
                inserted = change.get("insert")
                if isinstance(inserted, list):
                    for node in inserted:
                        self._dirty.update(hash(block) for block in _blocks_within(node))
        if sentence_end and self._on_sentence_end is not None:
            self._on_sentence_end()
        self._on_remote_change()


def _read_block(node: _Node) -> tuple[Block, list[XmlText | None]]:
    runs: list[XmlText | None] = [
        child if isinstance(child, XmlText) else None for child in node.children
    ]
    block = Block.from_parts(None if run is None else TextRun.from_diff(run.diff()) for run in runs)
    return block, runs


def _blocks_of(node: _Node) -> Iterator[_Node]:
    """Every node holding text runs, in document order."""
    children = list(node.children)
    if any(isinstance(child, XmlText) for child in children):
        yield node
    for child in children:
        if isinstance(child, XmlElement):
            yield from _blocks_of(child)


def _blocks_within(node: Any) -> Iterator[_Node]:
    """The blocks inside a node just inserted (its parent, for a bare run)."""
    if isinstance(node, XmlText):
        parent = node.parent
        if isinstance(parent, XmlElement | XmlFragment):
            yield parent
    elif isinstance(node, XmlElement):
        yield from _blocks_of(node)
