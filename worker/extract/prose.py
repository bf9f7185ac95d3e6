"""Finding gazetteer names in English prose (pure functions, no I/O).

A candidate is the longest run of capitalised words (lower-case connectors such as
"de" allowed inside: "Rio de Janeiro", and elided articles: "Cortina d'Ampezzo") whose
text is a gazetteer name, or a short form matched case-sensitively ("UK", "NYC").
Hyphenated names are one word ("Carmel-by-the-Sea"); a possessive "'s" is not part of
the name ("Sedona's"). Each candidate is then judged:

- A following ``", <region>"`` ("Savannah, GA", "Paris, Texas", "Hope, BC") picks the
  city in that region and is itself a strong place cue. The mark covers the city text
  only; the region is consumed (not marked separately).
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
- A town (a city of fewer than 100 000 people and no other place of that name) is
  held to more: it must not be part of a longer proper noun ("Tom Baker", "Liberty
  Bell"), nor the subject of a person's verb ("Jasper barked"); and when its name is
  also a frequent English word or first name (:meth:`Gazetteer.word_zipf` at least
  :data:`AMBIGUOUS_ZIPF`: "Hope", "Liberty", "Jasper"), it needs place context: a
  preposition of place ("in Hope", "near Jasper"), "to"/"from"/"at" after a word of
  travel ("the ferry to Capri"), "the village of", a list with other places, or a
  region after it. This scales with the gazetteer: no list of ambiguous town names.
- Among places of the same name, :func:`choose` prefers one near the document's
  other places (the places already found), then the most populous
  (:mod:`worker.extract.namesakes`); a country or US state still wins over a city of
  the same name, a listed region or island over a town, and "New York"/"Washington
  D.C." (aliases) mean the cities.
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
    MOTION_WORDS,
    PERSON_NAMES,
    PERSON_TITLES,
    PERSON_VERBS_AFTER,
    PERSON_VERBS_BEFORE,
    PLACE_CUES,
    PLACE_NOUNS,
    QUALIFIERS_BEFORE,
    RELATION_WORDS,
    STOP_WORD_NAMES,
    STRONG_PLACE_CUES,
    TIME_WORDS,
)
from worker.extract.namesakes import KIND_RANK, PlaceContext, best_namesake

__all__ = ["AMBIGUOUS_ZIPF", "Found", "choose", "find_places"]

#: Dotted abbreviations ("U.S.", "D.C."), then words (letters, inner hyphens and
#: apostrophes, but not a possessive "'s").
_TOKEN = re.compile(r"(?:[A-Z]\.){2,}|[^\W\d_]+(?:[-'\u2019](?![sS]\b)[^\W\d_]+)*")
#: An elided article before a capitalised name part ("d'Ampezzo", "l'Isle").
_ELIDED = re.compile(r"[dlDL]['\u2019][^\W\d_]")
#: Text between two places of a list ("Zermatt, Täsch and Randa").
_LIST_GAP = re.compile(r"\s*(?:,\s*(?:and\s+|or\s+)?|\s(?:and|or|&)\s+)")
_MAX_WORDS = 6
_COMMON_WORD_MIN_POPULATION = 100_000
#: Below this population a city is a "town": it needs more evidence (see above).
_TOWN_POPULATION = 100_000
#: A one-word name at least this frequent in English (Zipf scale) is ambiguous.
AMBIGUOUS_ZIPF = 3.0
_MOTION_LOOKBACK = 5


@dataclass(frozen=True, slots=True)
class Found:
    start: int
    text: str
    entry: Entry
    #: Every place of that name the choice was made among (the region qualifier's
    #: choice, when there was one, is final: then just the entry).
    candidates: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class _Token:
    start: int
    end: int
    text: str


@dataclass(slots=True)
class _Pending:
    """A town with a weak cue, kept until the sentence's other places are known."""

    found: Found
    end_char: int
    weak: str


def find_places(gaz: Gazetteer, sentence: str, *, near: Sequence[Entry] = ()) -> list[Found]:
    """Every place named in ``sentence``, in order, each occurrence separately.

    ``near`` are the document's places found so far: among places of the same name,
    the one near them wins (:func:`choose`).
    """
    tokens = [_Token(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(sentence)]
    shouting = sum(c.isupper() for c in sentence) > 0.6 * max(1, sum(c.isalpha() for c in sentence))
    found: list[Found] = []
    ends: list[int] = []
    pending: list[_Pending] = []
    i = 0
    while i < len(tokens):
        hit = _longest_name(gaz, sentence, tokens, i, shouting=shouting)
        if hit is None:
            i += 1
            continue
        end, entries = hit
        text = sentence[tokens[i].start : tokens[end - 1].end]
        region, after = _region_after(gaz, sentence, tokens, end)
        listed = bool(ends) and _LIST_GAP.fullmatch(sentence[ends[-1] : tokens[i].start])
        verdict = _judge(gaz, sentence, tokens, i, end, text, entries, region, listed=bool(listed))
        if verdict is not None and text.isupper() and not shouting and _is_town(verdict[0]):
            verdict = None  # "POLL", "NOTE": an acronym or a shout, not a town
        if verdict is None:
            i += 1
            continue
        entry, candidates, weak = verdict
        place = Found(tokens[i].start, text, entry, candidates)
        if weak:
            pending.append(_Pending(place, tokens[end - 1].end, weak))
        else:
            found.append(place)
            ends.append(tokens[end - 1].end)
        i = after if region is not None and entry.kind == "city" else end
    if pending:
        found = _settle(sentence, found, pending)
    return choose(found, near)


def _is_town(entry: Entry) -> bool:
    return entry.kind == "city" and entry.population < _TOWN_POPULATION


def choose(found: Sequence[Found], near: Sequence[Entry]) -> list[Found]:
    """``found`` with each ambiguous name resolved: the candidate nearest the other
    places (``near`` and the rest of ``found``) wins when it is close enough to
    outweigh a larger namesake (:func:`~worker.extract.namesakes.best_namesake`)."""
    if not any(len(f.candidates) > 1 for f in found):
        return list(found)
    out: list[Found] = []
    for n, f in enumerate(found):
        if len(f.candidates) <= 1:
            out.append(f)
            continue
        # Namesakes do not vouch for each other ("Cognac tasting in Cognac").
        namesakes = set(f.candidates)
        others = [*near, *(g.entry for m, g in enumerate(found) if m != n)]
        context = PlaceContext([e for e in others if e not in namesakes])
        best = best_namesake(f.candidates, context)
        out.append(Found(f.start, f.text, best, f.candidates))
    return out


def _settle(sentence: str, found: list[Found], pending: list[_Pending]) -> list[Found]:
    """Keep the pending towns that the sentence's other places vouch for: one listed
    right next to them, or the other end of a "from ... to ..." pair."""
    accepted = list(found)
    for p in pending:
        others = [f for f in found if f is not p.found]
        next_to = any(
            _LIST_GAP.fullmatch(sentence[p.end_char : f.start])
            or _LIST_GAP.fullmatch(sentence[f.start + len(f.text) : p.found.start])
            for f in others
        )
        pair = any(
            (p.weak, f.start > p.found.start, _word_before(sentence, f.start))
            in (("from", True, "to"), ("to", False, "from"))
            for f in others
        )
        if next_to or pair:
            accepted.append(p.found)
    return sorted(accepted, key=lambda f: f.start)


def _word_before(sentence: str, start: int) -> str:
    words = sentence[:start].split()
    return words[-1].casefold() if words else ""


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
            if (
                not last.text[0].isupper()
                and last.text not in CONNECTORS
                and not _ELIDED.match(last.text)
            ):
                break
        if not last.text[0].isupper() and not _ELIDED.match(last.text):
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
    *,
    listed: bool,
) -> tuple[Entry, tuple[Entry, ...], str] | None:
    """The place ``text`` names here, the candidates, and "" when it is certain or the
    weak cue ("to", "from", "at") it hangs on; None when it is not a place."""
    if region is not None:
        cc, admin1 = region
        in_region = [
            e
            for e in entries
            if e.kind == "city" and e.countrycode == cc and (not admin1 or e.admin1 == admin1)
        ]
        if in_region:
            return max(in_region, key=lambda e: e.population), (), ""
    best = max(entries, key=lambda e: (KIND_RANK[e.kind], e.population))
    candidates = tuple(entries) if len(entries) > 1 and best.kind != "country" else ()
    before = [t.text for t in tokens[max(0, i - 3) : i]]
    prev = before[-1] if before else ""
    nxt = tokens[end].text if end < len(tokens) else ""
    gap_after = sentence[tokens[end - 1].end : tokens[end].start] if end < len(tokens) else ""
    single = end == i + 1
    initial = i == 0 or (prev in CAPITALISED_LEADERS and i == 1)
    town = _is_town(best)

    # Person cues.
    if prev.rstrip(".").casefold() in PERSON_TITLES and prev[:1].isupper():
        return None
    if prev.casefold() in RELATION_WORDS:
        return None
    if single and prev.casefold() in PERSON_VERBS_BEFORE:
        return None
    placed = prev.casefold() in PLACE_CUES
    if (text in PERSON_NAMES or (town and not placed)) and _person_after(
        sentence, tokens, end, gap_after, gaz
    ):
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
        return best, candidates, ""
    # Everyday words.
    cue = prev.casefold() in PLACE_CUES or _listed(before, i, tokens, sentence)
    if text in TIME_WORDS:
        return None
    if not town:
        if (
            single
            and text in STOP_WORD_NAMES
            and (not cue or best.population < _COMMON_WORD_MIN_POPULATION)
        ):
            return None
        if single and text in COMMON_WORD_NAMES and initial and not cue:
            return None
        return best, candidates, ""
    # Towns: part of a longer proper noun?
    if _in_longer_name(sentence, tokens, i, end, gaz):
        return None
    if not single or (
        gaz.word_zipf(text) < AMBIGUOUS_ZIPF
        and text not in PERSON_NAMES
        and text not in COMMON_WORD_NAMES
        and text not in STOP_WORD_NAMES
    ):
        return best, candidates, ""
    # A town whose name is also a word or a first name: place context, or nothing.
    low = prev.casefold()
    strong = low in STRONG_PLACE_CUES or (
        low == "of" and i >= 2 and tokens[i - 2].text.casefold() in PLACE_NOUNS
    )
    if strong or listed:
        return best, candidates, ""
    if low in ("to", "from", "at"):
        back = {t.text.casefold() for t in tokens[max(0, i - 1 - _MOTION_LOOKBACK) : i - 1]}
        if back & MOTION_WORDS:
            return best, candidates, ""
        return best, candidates, low
    return best, candidates, "list"


def _in_longer_name(sentence: str, tokens: list[_Token], i: int, end: int, gaz: Gazetteer) -> bool:
    """True when the name is glued to other capitalised words ("Tom Baker", "Liberty
    Bell", "Statue of Liberty") that are not places or qualifiers themselves."""
    if end < len(tokens) and sentence[tokens[end - 1].end : tokens[end].start] == " ":
        nxt = tokens[end].text
        if nxt[:1].isupper() and nxt != "I" and not gaz.lookup(nxt):
            return True
    if i >= 1 and sentence[tokens[i - 1].end : tokens[i].start] == " ":
        prev = tokens[i - 1].text
        if (
            prev[:1].isupper()
            and i >= 2
            and prev not in QUALIFIERS_BEFORE
            and prev.casefold() not in PLACE_CUES
            and prev.casefold() not in MOTION_WORDS
            and not gaz.lookup(prev)
        ):
            return True
    return (
        i >= 2
        and tokens[i - 1].text == "of"
        and tokens[i - 2].text[:1].isupper()
        and tokens[i - 2].text.casefold() not in PLACE_NOUNS
    )


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
