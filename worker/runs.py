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
from typing import Any

__all__ = ["EMBED_CHAR", "MARK_NAME", "TextRun", "locate_sentence"]

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

    @classmethod
    def from_diff(cls, chunks: Iterable[tuple[Any, Mapping[str, Any] | None]]) -> TextRun:
        parts: list[str] = []
        offsets: list[int] = [0]
        marked: list[tuple[int, int]] = []
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
                color = _color_index(mark)
                if color is not None:
                    colors.append(color)
            index += length
        return cls("".join(parts), tuple(offsets), tuple(marked), tuple(colors))

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
