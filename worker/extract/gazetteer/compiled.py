"""The compiled gazetteer: one flat, read-only buffer, and :class:`Gazetteer` reading it.

The buffer (the cache file, memory-mapped) is a header, a small JSON part (aliases,
regions, names of countries and states) and arrays of uint32::

    entries:  offsets[N+1] into a blob of records (struct _RECORD + five strings)
    an index (names, alternates, ids, words):
              key offsets[K+1] into a blob of keys sorted by their UTF-8 bytes,
              posting offsets[K+1] into postings (entry numbers, in insertion order)

A file mapping is not copied when a process forks (only private memory's page
tables are) and its pages are shared by every process that maps it: the forkserver
template forks faster and no worker copies a byte of it.
:func:`compile_gazetteer` writes the buffer, :class:`Gazetteer` reads it.
"""

from __future__ import annotations

import array
import bisect
import itertools
import json
import mmap
import struct
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from worker.extract.gazetteer.entry import FOLDED_MIN_LENGTH, Entry, Kind, fold, name_key

if TYPE_CHECKING:
    from worker.extract.gazetteer.build import GazetteerBuilder

__all__ = ["LOWER_CASE_MIN_POPULATION", "Gazetteer", "compile_gazetteer"]

#: Text in lower case finds cities of at least this many people only (see lookup).
LOWER_CASE_MIN_POPULATION = 15_000

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
        key = name_key(text)
        found: list[int] = []
        for index in (self._indexes["names"], self._indexes["alternates"]):
            hits = index.get(key)
            if not hits and len(key) >= FOLDED_MIN_LENGTH:
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
        found = self._indexes["words"].get(name_key(text))
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


def compile_gazetteer(built: GazetteerBuilder) -> bytes:
    """The flat buffer of ``built`` (laid out as the module docstring shows)."""
    numbers: dict[int, int] = {}
    entries: list[Entry] = []

    def number(entry: Entry) -> int:
        n = numbers.get(id(entry))
        if n is None:
            n = numbers[id(entry)] = len(entries)
            entries.append(entry)
        return n

    indexes: dict[str, dict[str, list[Entry]]] = {
        "names": built.names,
        "alternates": built.alternates,
        "ids": {gid: [entry] for gid, entry in built.by_id.items()},
    }
    numbered = {
        name: sorted(
            ((key.encode(), [number(e) for e in found]) for key, found in index.items() if found),
            key=lambda item: item[0],
        )
        for name, index in indexes.items()
    }
    numbered["words"] = sorted((key.encode(), [zipf]) for key, zipf in built.words.items())
    aliases = {text: number(entry) for text, entry in built.aliases.items()}

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
        "regions": built.regions,
        "country_names": built.country_names,
        "state_names": built.state_names,
        "count": len(built.by_id),
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


def _u32(values: Iterable[int]) -> bytes:
    return array.array("I", values).tobytes()


def _align(n: int) -> int:
    return (n + 7) & ~7
