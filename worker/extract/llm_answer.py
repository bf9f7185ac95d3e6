"""Reading the model's answer: untrusted JSON in, checked :class:`Place` records out.

The answer is untrusted, and so is the document text the model saw:

- every place must name a sentence of the batch and a text that occurs in it as whole
  words; each occurrence becomes a :class:`~worker.extract.base.Place`;
- the text must resolve in the gazetteer (coord_source "gazetteer"), or else look like
  a proper name and come with in-range coordinates (coord_source "llm");
- anything else is dropped and logged (``llm_place_dropped``).

A sentence that tells the model to mark something else therefore cannot produce a mark
on text that is not written in that sentence, nor on common words without coordinates.
An answer that is not the schema at all is a :class:`~worker.memory.Failure`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import structlog

from worker.extract.base import Place
from worker.extract.gazetteer import Entry, Gazetteer
from worker.extract.lexicon import STOP_WORD_NAMES
from worker.memory import Failure

__all__ = ["read_places"]

log = structlog.get_logger(__name__)

#: A place text longer than this many words is not a place name.
_MAX_PLACE_WORDS = 6


def read_places(
    sentences: Sequence[str], content: str, gazetteer: Gazetteer
) -> list[Place] | Failure:
    """The checked places of an answer to ``sentences``, in sentence and text order,
    each occurrence once; a :class:`~worker.memory.Failure` when the answer is not
    the schema's ``{"places": [...]}``."""
    try:
        items = json.loads(content)["places"]
        if not isinstance(items, list):
            raise TypeError("places is not a list")  # noqa: TRY301
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("llm_answer_malformed", reason=str(exc)[:200])
        return Failure("malformed answer")
    places: list[Place] = []
    seen: set[tuple[int, int]] = set()
    for item in items:
        for place in _places_of(sentences, item, gazetteer):
            if (place.sentence_index, place.start) not in seen:
                seen.add((place.sentence_index, place.start))
                places.append(place)
    return sorted(places, key=lambda p: (p.sentence_index, p.start))


def _places_of(sentences: Sequence[str], item: Any, gazetteer: Gazetteer) -> list[Place]:
    if not isinstance(item, dict):
        log.warning("llm_place_dropped", reason="not_an_object")
        return []
    index, text, name = item.get("sentence_index"), item.get("text"), item.get("name")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(sentences):
        log.warning("llm_place_dropped", reason="bad_sentence_index")
        return []
    if not isinstance(text, str) or not text.strip() or len(text.split()) > _MAX_PLACE_WORDS:
        log.warning("llm_place_dropped", reason="bad_text", sentence_index=index)
        return []
    name = name if isinstance(name, str) and name.strip() else text
    starts = [
        m.start() for m in re.finditer(r"(?<!\w)" + re.escape(text) + r"(?!\w)", sentences[index])
    ]
    if not starts:
        log.warning("llm_place_dropped", reason="text_not_in_sentence", sentence_index=index)
        return []
    entry = _geocode(gazetteer, text, name)
    if entry is not None:
        coords, source, display, gid = (
            (entry.lat, entry.lng),
            "gazetteer",
            entry.display,
            entry.geonames_id,
        )
    else:
        coords = _coords(item.get("lat"), item.get("lng"))
        if coords is None or not _looks_like_name(text):
            log.warning("llm_place_dropped", reason="unresolved", sentence_index=index)
            return []
        source, display, gid = "llm", name[:200], None
    return [
        Place(index, start, text, display, coords[0], coords[1], source, gid) for start in starts
    ]


def _geocode(gazetteer: Gazetteer, text: str, name: str) -> Entry | None:
    """The gazetteer's entry for ``text``: among namesakes, the one whose display name
    shares most parts with the model's full ``name`` ("Paris, Texas"), then a region
    or country over a city, then the most populous."""
    entries = gazetteer.lookup(text)
    if not entries:
        return None
    wanted = {part.strip().casefold() for part in name.split(",")[1:]}

    def score(entry: Entry) -> tuple[int, int, int]:
        parts = {p.strip().casefold() for p in entry.display.split(",")[1:]}
        return (len(parts & wanted), entry.kind != "city", entry.population)

    return max(entries, key=score)


def _coords(lat: Any, lng: Any) -> tuple[float, float] | None:
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lng)):
        return None
    lat_f, lng_f = float(lat), float(lng)
    if not (math.isfinite(lat_f) and math.isfinite(lng_f)):
        return None
    if not (-90 <= lat_f <= 90 and -180 <= lng_f <= 180):
        return None
    return (lat_f, lng_f)


def _looks_like_name(text: str) -> bool:
    """A proper name: every word capitalised apart from short connectors, not an
    everyday word on its own."""
    words = text.split()
    if not words[0][:1].isupper() or (len(words) == 1 and text in STOP_WORD_NAMES):
        return False
    return all(w[:1].isupper() or (w.islower() and len(w) <= 3) for w in words)
