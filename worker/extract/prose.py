"""Finding gazetteer names in English prose (pure functions, no I/O).

A candidate is the longest run of capitalised words (lower-case connectors such as
"de" allowed inside: "Rio de Janeiro") whose text is a gazetteer name, or a short
form matched case-sensitively ("UK", "NYC"). Each candidate is then judged:

- A following ``", <region>"`` ("Savannah, GA", "Paris, Texas", "Asheville, North
  Carolina") picks the city in that region and is itself a strong place cue. The mark
  covers the city text only; the region is consumed (not marked separately).
- Person cues reject it: a title ("Mr. Lincoln"), a relation before it ("my sister,
  Savannah", "cousin Austin"), a person verb before it ("asked Dallas"), and for first
  names that are also places (:data:`PERSON_NAMES`) a person verb or "and I" after it
  ("Jordan told me", "Florence and I"), an appositive (", my roommate") or a surname
  ("Paris Hilton").
- A feature noun before or after makes it a different feature ("Lake Michigan",
  "Vancouver Island"); "the" before a city makes it not a city ("the Euro").
- Names that are everyday words ("Nice", "Reading", "Mobile", "Spring") need a cue
  word before them ("in", "to", "from", "visit", ...) and a city of 100 000 people;
  months and seasons never count. Names that are less common words ("Split",
  "Bath") need a cue only at the start of a sentence.
- Otherwise the most populous entry wins, a country or US state over a city of the
  same name, except "New York"/"Washington D.C." (aliases) which mean the cities.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from worker.extract.gazetteer import Entry, Gazetteer
from worker.extract.lexicon import (
    CAPITALISED_LEADERS,
    COMMON_WORD_NAMES,
    CONNECTORS,
    FEATURE_NOUNS_AFTER,
    FEATURE_NOUNS_BEFORE,
    PERSON_NAMES,
    PERSON_TITLES,
    PERSON_VERBS_AFTER,
    PERSON_VERBS_BEFORE,
    PLACE_CUES,
    RELATION_WORDS,
    STOP_WORD_NAMES,
    TIME_WORDS,
)

__all__ = ["Found", "find_places"]

#: Dotted abbreviations ("U.S.", "D.C."), then words (letters, inner hyphens and
#: apostrophes, but not a possessive "'s").
_TOKEN = re.compile(r"(?:[A-Z]\.){2,}|[^\W\d_]+(?:[-'\u2019](?![sS]\b)[^\W\d_]+)*")
_MAX_WORDS = 6
_COMMON_WORD_MIN_POPULATION = 100_000
_KIND_RANK = {"country": 3, "us_state": 2, "continent": 1, "city": 0}


@dataclass(frozen=True, slots=True)
class Found:
    start: int
    text: str
    entry: Entry


@dataclass(frozen=True, slots=True)
class _Token:
    start: int
    end: int
    text: str


def find_places(gaz: Gazetteer, sentence: str) -> list[Found]:
    """Every place named in ``sentence``, in order, each occurrence separately."""
    tokens = [_Token(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(sentence)]
    shouting = sum(c.isupper() for c in sentence) > 0.6 * max(1, sum(c.isalpha() for c in sentence))
    found: list[Found] = []
    i = 0
    while i < len(tokens):
        hit = _longest_name(gaz, sentence, tokens, i, shouting=shouting)
        if hit is None:
            i += 1
            continue
        end, entries = hit
        text = sentence[tokens[i].start : tokens[end - 1].end]
        region, after = _region_after(gaz, sentence, tokens, end)
        entry = _judge(gaz, sentence, tokens, i, end, text, entries, region)
        if entry is not None:
            found.append(Found(tokens[i].start, text, entry))
            i = after if region is not None and entry.kind == "city" else end
        else:
            i += 1
    return found


def _longest_name(
    gaz: Gazetteer, sentence: str, tokens: list[_Token], i: int, *, shouting: bool
) -> tuple[int, list[Entry]] | None:
    first = tokens[i].text
    if not first[0].isupper():
        return None
    best: tuple[int, list[Entry]] | None = None
    for end in range(i + 1, min(len(tokens), i + _MAX_WORDS) + 1):
        last = tokens[end - 1]
        if end > i + 1:
            gap = sentence[tokens[end - 2].end : last.start]
            if gap not in (" ", ". ") or (gap == ". " and tokens[end - 2].text not in ("St", "Mt")):
                break
            if not last.text[0].isupper() and last.text not in CONNECTORS:
                break
        if not last.text[0].isupper():
            continue
        text = sentence[tokens[i].start : last.end]
        alias = gaz.alias(text)
        if alias is not None and not (shouting and text.isupper() and len(text) <= 3):
            best = (end, [alias])
            continue
        if text.isupper() and len(text) <= 3:
            continue  # "IN", "OR", "ME": only as aliases or regions
        entries = gaz.lookup(text)
        if entries:
            best = (end, entries)
    return best


def _region_after(
    gaz: Gazetteer, sentence: str, tokens: list[_Token], end: int
) -> tuple[tuple[str, str] | None, int]:
    if end >= len(tokens) or sentence[tokens[end - 1].end : tokens[end].start].strip() != ",":
        return None, end
    for stop in range(min(len(tokens), end + 3), end, -1):
        if not all(t.text[0].isupper() for t in tokens[end:stop]):
            continue
        text = sentence[tokens[end].start : tokens[stop - 1].end]
        region = gaz.region(text)
        if region is not None:
            return region, stop
    return None, end


def _judge(
    gaz: Gazetteer,
    sentence: str,
    tokens: list[_Token],
    i: int,
    end: int,
    text: str,
    entries: list[Entry],
    region: tuple[str, str] | None,
) -> Entry | None:
    if region is not None:
        cc, admin1 = region
        in_region = [
            e
            for e in entries
            if e.kind == "city" and e.countrycode == cc and (not admin1 or e.admin1 == admin1)
        ]
        if in_region:
            return max(in_region, key=lambda e: e.population)
    best = max(entries, key=lambda e: (_KIND_RANK[e.kind], e.population))
    before = [t.text for t in tokens[max(0, i - 3) : i]]
    prev = before[-1] if before else ""
    nxt = tokens[end].text if end < len(tokens) else ""
    gap_after = sentence[tokens[end - 1].end : tokens[end].start] if end < len(tokens) else ""
    single = end == i + 1
    initial = i == 0 or (prev in CAPITALISED_LEADERS and i == 1)

    # Person cues.
    if prev.rstrip(".").casefold() in PERSON_TITLES and prev[:1].isupper():
        return None
    if prev.casefold() in RELATION_WORDS:
        return None
    if single and prev.casefold() in PERSON_VERBS_BEFORE:
        return None
    if text in PERSON_NAMES and _person_after(sentence, tokens, end, gap_after, gaz):
        return None
    # Other features named after a place.
    if prev in FEATURE_NOUNS_BEFORE and gap_after_prev(sentence, tokens, i) == " ":
        return None
    if i >= 2 and prev == "of" and tokens[i - 2].text in FEATURE_NOUNS_BEFORE:
        return None
    if nxt in FEATURE_NOUNS_AFTER and gap_after == " ":
        return None
    if best.kind == "city" and prev == "the":
        return None
    if region is not None:
        return best
    # Everyday words.
    cue = prev.casefold() in PLACE_CUES or _listed(before, i, tokens, sentence)
    if (
        single
        and text in STOP_WORD_NAMES
        and (not cue or text in TIME_WORDS or best.population < _COMMON_WORD_MIN_POPULATION)
    ):
        return None
    if single and text in COMMON_WORD_NAMES and initial and not cue:
        return None
    if text in TIME_WORDS:
        return None
    return best


def gap_after_prev(sentence: str, tokens: list[_Token], i: int) -> str:
    return sentence[tokens[i - 1].end : tokens[i].start] if i else ""


def _listed(before: Sequence[str], i: int, tokens: list[_Token], sentence: str) -> bool:
    """True when the name continues a list after a cue ("to Rome or Venice")."""
    return (
        len(before) >= 2
        and before[-1] in ("and", "or")
        and before[-2][:1].isupper()
        and (i >= 3 and tokens[i - 3].text.casefold() in PLACE_CUES)
    )


def _person_after(sentence: str, tokens: list[_Token], end: int, gap: str, gaz: Gazetteer) -> bool:
    if end >= len(tokens):
        return False
    nxt = tokens[end].text
    if gap == " " and nxt.casefold() in PERSON_VERBS_AFTER:
        return True
    if (
        gap == " "
        and nxt == "and"
        and end + 1 < len(tokens)
        and tokens[end + 1].text in ("I", "me", "her", "his", "my", "their", "our")
    ):
        return True
    if gap.strip() == "," and nxt in ("my", "our", "his", "her", "their", "who", "whose"):
        return True
    return gap == " " and nxt[:1].isupper() and not nxt.isupper() and not gaz.lookup(nxt)
