"""Planning ``geoMark`` marks on a run of text (sans-IO).

A mark is only planned on text that reads exactly the place's text right now and
carries no ``geoMark`` yet (invariant 7). The sentence a place was found in is
re-found in its block (paragraph) at apply time, so text typed before it during the extraction
shifts the mark instead of misplacing it; if the sentence itself was edited it is
not found and nothing is marked (the edit triggers a fresh extraction).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from worker.runs import Block, locate_sentence

__all__ = ["PlaceLike", "PlannedMark", "geo_mark_attrs", "plan_marks"]


class PlaceLike(Protocol):
    """What marking needs of an extracted place (``worker.extract.Place``)."""

    @property
    def start(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def lat(self) -> float: ...
    @property
    def lng(self) -> float: ...
    @property
    def coord_source(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PlannedMark:
    """Format ``[y_start, y_end)`` (Y.js offsets) of the block's part ``part`` for ``place``."""

    part: int
    y_start: int
    y_end: int
    place: PlaceLike


def plan_marks(
    block: Block, sentence: str, hint: int, places: Iterable[PlaceLike]
) -> list[PlannedMark] | None:
    """The marks to apply for ``places`` found in ``sentence``.

    ``hint`` is where the sentence started in the block when it was extracted.
    Returns ``None`` when the sentence no longer occurs in the block, else the
    (possibly empty) list of marks that pass every check, without overlaps.
    """
    base = locate_sentence(block.text, sentence, hint)
    if base is None:
        return None
    taken: list[tuple[int, int]] = []
    planned: list[PlannedMark] = []
    for place in places:
        if not place.text or place.start < 0:
            continue
        start = base + place.start
        end = start + len(place.text)
        if end > base + len(sentence) or block.text[start:end] != place.text:
            continue
        located = block.locate(start, end)
        if located is None or any(s < end and start < e for s, e in taken):
            continue
        part, local_start, local_end = located
        run = block.parts[part]
        if run is None or run.is_marked(local_start, local_end):
            continue
        taken.append((start, end))
        planned.append(PlannedMark(part, run.y_offset(local_start), run.y_offset(local_end), place))
    return planned


def geo_mark_attrs(place: PlaceLike, color_index: int) -> dict[str, Any]:
    """The ``geoMark`` attribute value (DESIGN.md "Document format")."""
    return {
        "geoId": uuid.uuid4().hex,
        "placeName": place.name,
        "lat": _coordinate(place.lat),
        "lng": _coordinate(place.lng),
        "colorIndex": color_index,
        "coordSource": place.coord_source,
    }


def _coordinate(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text
