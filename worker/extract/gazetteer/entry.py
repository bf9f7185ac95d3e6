"""One place the gazetteer knows (:class:`Entry`), and how names are keyed.

A name is looked up by its key: case-folded, with typographic apostrophes and runs
of spaces normalised (:func:`name_key`); a long enough name is also found without
its accents (:func:`fold`, :data:`FOLDED_MIN_LENGTH`).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

__all__ = ["FOLDED_MIN_LENGTH", "Entry", "Kind", "fold", "name_key"]

Kind = Literal["city", "country", "us_state", "continent", "region"]

#: Text without its accents ("Zurich") matches an accented name ("Zürich") only when
#: at least this long, so short English words ("Can") never become "Çan".
FOLDED_MIN_LENGTH = 5


@dataclass(frozen=True, slots=True)
class Entry:
    """One place the gazetteer knows."""

    kind: Kind
    name: str
    lat: float
    lng: float
    population: int
    countrycode: str
    admin1: str
    geonames_id: str | None
    display: str


def fold(text: str) -> str:
    """Case-fold ``text`` and strip its accents ("Zürich" -> "zurich")."""
    if text.isascii():
        return text.casefold()
    decomposed = unicodedata.normalize("NFKD", text.casefold().replace("\u2019", "'"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def name_key(text: str) -> str:
    """The key a name is indexed by: case-folded, apostrophes and spaces normalised."""
    return " ".join(text.casefold().replace("\u2019", "'").split())
