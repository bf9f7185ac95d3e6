"""One ``XmlText`` run as plain text, with Y.js offsets and existing marks (sans-IO).

pycrdt addresses text by UTF-8 byte offsets, embeds count as one unit, and
formatting lives in the chunks of ``XmlText.diff()``. :class:`TextRun` turns such a
diff into a Python string (embeds become U+FFFC) plus the table that maps each
string index to its Y.js offset, and remembers which spans already carry a
``geoMark`` and which colour indexes are taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

__all__ = ["EMBED_CHAR", "MARK_NAME", "Block", "TextRun", "locate_sentence"]

#: Stand-in for an embedded object (one Y.js offset unit) in :attr:`TextRun.text`.
EMBED_CHAR = "\ufffc"
#: The formatting attribute (the ProseMirror mark name) of a place mark.
MARK_NAME = "geoMark"


@dataclass(frozen=True, slots=True)
class TextRun:
    text: str
    #: ``offsets[i]`` is the Y.js offset of ``text[i]``; ``len(offsets) == len(text) + 1``.
    offsets: tuple[int, ...]
    #: ``[start, end)`` string ranges that carry a ``geoMark``.
    marked: tuple[tuple[int, int], ...]
    #: ``colorIndex`` values of the marks in this run.
    color_indexes: tuple[int, ...]
    #: ``geoId`` of each range in :attr:`marked` (None when missing).
    mark_ids: tuple[str | None, ...] = ()

    @classmethod
    def from_diff(cls, chunks: Iterable[tuple[Any, Mapping[str, Any] | None]]) -> TextRun:
        parts: list[str] = []
        offsets: list[int] = [0]
        marked: list[tuple[int, int]] = []
        ids: list[str | None] = []
        colors: list[int] = []
        index = 0
        for content, attrs in chunks:
            if isinstance(content, str):
                parts.append(content)
                for ch in content:
                    offsets.append(offsets[-1] + len(ch.encode()))
                length = len(content)
            else:
                parts.append(EMBED_CHAR)
                offsets.append(offsets[-1] + 1)
                length = 1
            mark = attrs.get(MARK_NAME) if attrs else None
            if mark is not None:
                marked.append((index, index + length))
                geo_id = mark.get("geoId") if isinstance(mark, Mapping) else None
                ids.append(geo_id if isinstance(geo_id, str) else None)
                color = _color_index(mark)
                if color is not None:
                    colors.append(color)
            index += length
        return cls("".join(parts), tuple(offsets), tuple(marked), tuple(colors), tuple(ids))

    def stale_marks(self, expected: Mapping[str, str]) -> list[tuple[int, int]]:
        """Y.js ranges of marks (by ``geoId`` in ``expected``) that no longer read as expected.

        A mark applied while a concurrent edit was in flight can end up on other text
        once both changes merge; such a mark must come off again (invariant 7).
        """
        spans: dict[str, list[tuple[int, int]]] = {}
        for (start, end), geo_id in zip(self.marked, self.mark_ids, strict=True):
            if geo_id is not None and geo_id in expected:
                spans.setdefault(geo_id, []).append((start, end))
        stale: list[tuple[int, int]] = []
        for geo_id, ranges in spans.items():
            contiguous = all(a[1] == b[0] for a, b in pairwise(ranges))
            text = "".join(self.text[s:e] for s, e in ranges)
            if not contiguous or text != expected[geo_id]:
                stale.extend((self.offsets[s], self.offsets[e]) for s, e in ranges)
        return stale

    def y_offset(self, index: int) -> int:
        """The Y.js offset of string index ``index`` (``0 <= index <= len(text)``)."""
        return self.offsets[index]

    def is_marked(self, start: int, end: int) -> bool:
        """Whether any character of ``text[start:end]`` carries a ``geoMark``."""
        return any(s < end and start < e for s, e in self.marked)


def _color_index(mark: Any) -> int | None:
    if not isinstance(mark, Mapping):
        return None
    value = mark.get("colorIndex")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return int(value)


def locate_sentence(text: str, sentence: str, hint: int) -> int | None:
    """Where ``sentence`` occurs in ``text`` now: the occurrence nearest ``hint``.

    Returns ``None`` if the sentence no longer occurs verbatim (it was edited; the
    edit itself triggers a new extraction).
    """
    best: int | None = None
    pos = text.find(sentence)
    while pos != -1:
        if best is None or abs(pos - hint) < abs(best - hint):
            best = pos
        pos = text.find(sentence, pos + 1)
    return best


@dataclass(frozen=True, slots=True)
class Block:
    """A paragraph's text: its runs in order, each inline node between them read as "\\n".

    Sentences are found in the whole block, so a sentence may continue across a hard
    break; a place is only marked if it lies inside one run.
    """

    text: str
    #: The runs of the block; ``None`` for an inline node (hard break, image).
    parts: tuple[TextRun | None, ...]
    #: Offset in :attr:`text` where each part starts.
    starts: tuple[int, ...]

    @classmethod
    def from_parts(cls, parts: Iterable[TextRun | None]) -> Block:
        texts: list[str] = []
        starts: list[int] = []
        offset = 0
        kept = tuple(parts)
        for part in kept:
            starts.append(offset)
            piece = "\n" if part is None else part.text
            texts.append(piece)
            offset += len(piece)
        return cls("".join(texts), kept, tuple(starts))

    def locate(self, start: int, end: int) -> tuple[int, int, int] | None:
        """``(part index, start, end)`` within one run for ``text[start:end]``, if any."""
        for index, (part, part_start) in enumerate(zip(self.parts, self.starts, strict=True)):
            if part is None:
                continue
            if part_start <= start and end <= part_start + len(part.text):
                return index, start - part_start, end - part_start
        return None

    @property
    def color_indexes(self) -> tuple[int, ...]:
        return tuple(c for part in self.parts if part is not None for c in part.color_indexes)
