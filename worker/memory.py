"""The agent's extraction memory and the queue of sentences still to extract (sans-IO).

A sentence's *result* is known by its normalised text (:func:`result_key`) and the
extractor version that produced it; the memory maps that key to what the model
said (the places, possibly none), or to why it has not said it yet. The memory of a
document lives in the database (``extraction_memory``); the manager hands it to
each new life over the pipe and stores what the worker reports, so no life and no
manager pays twice for a sentence (invariant 12).

:class:`ExtractionQueue` decides what to send next: typed sentences (``urgent``)
before the first pass over the document, batches bounded by a sentence count and a
character count, failed sentences back after an exponential backoff (or the
server's ``Retry-After``), a batch the model refuses split into single sentences
so that only the offending one is given up.
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from worker.protocol import MemoryEntry, RememberedPlace

__all__ = [
    "ExtractionMemory",
    "ExtractionQueue",
    "Failure",
    "QueuedSentence",
    "find_remembered",
    "normalise",
    "result_key",
]

_SPACE = re.compile(r"\s+")
#: Retries of a sentence whose calls keep failing (timeouts, 5xx, malformed answers)
#: before it is given up for this extractor version.
MAX_ATTEMPTS = 8


def normalise(text: str) -> str:
    """The text a result is cached by: NFC, whitespace runs as one space, stripped."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def result_key(text: str) -> str:
    """A stable digest of a sentence's normalised text (32 hex digits)."""
    return hashlib.blake2b(normalise(text).encode(), digest_size=16).hexdigest()


def find_remembered(
    sentence: str, places: Iterable[RememberedPlace]
) -> Iterator[tuple[int, RememberedPlace]]:
    """``(start, place)`` for every whole-word occurrence of each remembered place."""
    for place in places:
        if not place.text:
            continue
        pattern = r"(?<!\w)" + re.escape(place.text) + r"(?!\w)"
        for match in re.finditer(pattern, sentence):
            yield match.start(), place


class ExtractionMemory:
    """What this extractor version already knows, by :func:`result_key`."""

    def __init__(self, extractor: str) -> None:
        self.extractor = extractor
        self._entries: dict[str, MemoryEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, entries: Iterable[MemoryEntry]) -> int:
        """Take entries handed over by the manager (other versions are ignored)."""
        taken = 0
        for entry in entries:
            if entry.extractor == self.extractor:
                known = self._entries.get(entry.key)
                if known is None or known.status != "done":
                    self._entries[entry.key] = entry
                    taken += 1
        return taken

    def get(self, key: str) -> MemoryEntry | None:
        return self._entries.get(key)

    def done(self, key: str, places: Iterable[RememberedPlace]) -> MemoryEntry:
        entry = MemoryEntry(
            key=key, extractor=self.extractor, status="done", places=list(places), attempts=0
        )
        self._entries[key] = entry
        return entry

    def failed(self, key: str, *, attempts: int, error: str, given_up: bool) -> MemoryEntry:
        entry = MemoryEntry(
            key=key,
            extractor=self.extractor,
            status="failed" if given_up else "retry",
            attempts=attempts,
            error=error[:200],
        )
        self._entries[key] = entry
        return entry


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a batch was not extracted.

    ``rejected``: the model refused the request itself (a 4xx other than 429); the
    same request would be refused again. Otherwise the failure is transient.
    ``spent=False``: no call was made (the budget is spent); not an attempt.
    """

    reason: str
    rejected: bool = False
    retry_after_s: float | None = None
    spent: bool = True


@dataclass(slots=True)
class QueuedSentence:
    key: str
    text: str
    urgent: bool
    attempts: int = 0
    not_before: float = 0.0
    #: Sent alone (its batch was refused as a whole).
    solo: bool = False
    in_flight: bool = field(default=False)


class ExtractionQueue:
    """Sentences waiting for the model, by key; see the module docstring."""

    def __init__(
        self,
        *,
        max_sentences: int,
        max_chars: int,
        retry_min_s: float = 2.0,
        retry_max_s: float = 300.0,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        if max_sentences < 1 or max_chars < 1:
            raise ValueError("batch limits must be at least 1")
        self.max_sentences = max_sentences
        self.max_chars = max_chars
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._max_attempts = max_attempts
        self._items: dict[str, QueuedSentence] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def want(self, key: str, text: str, *, urgent: bool, now: float, attempts: int = 0) -> None:
        """Queue a sentence (or make a queued one urgent)."""
        item = self._items.get(key)
        if item is None:
            self._items[key] = QueuedSentence(key, text, urgent, attempts, now)
        elif urgent and not item.urgent:
            item.urgent = True

    def take(self, now: float, *, urgent: bool) -> list[QueuedSentence]:
        """The next batch of one lane (typed sentences, or the first pass), due now.

        Retries go before first tries (they have waited longest).
        """
        batch: list[QueuedSentence] = []
        chars = 0
        for item in self._due(now, urgent=urgent):
            if item.solo or len(item.text) > self.max_chars:
                if not batch:
                    batch.append(item)
                    break
                continue
            if batch and (
                len(batch) >= self.max_sentences or chars + len(item.text) > self.max_chars
            ):
                break
            batch.append(item)
            chars += len(item.text)
        for item in batch:
            item.in_flight = True
        return batch

    def _due(self, now: float, *, urgent: bool) -> list[QueuedSentence]:
        due = [
            item
            for item in self._items.values()
            if not item.in_flight and item.not_before <= now and item.urgent == urgent
        ]
        due.sort(key=lambda item: (item.attempts == 0, item.not_before))
        return due

    def next_due(self, *, urgent: bool) -> float | None:
        """When the earliest waiting sentence of a lane may go, if any waits."""
        times = [
            item.not_before
            for item in self._items.values()
            if not item.in_flight and item.urgent == urgent
        ]
        return min(times) if times else None

    def done(self, keys: Iterable[str]) -> None:
        """The model answered for ``keys``: they leave the queue."""
        for key in keys:
            self._items.pop(key, None)

    def failed(
        self, batch: list[QueuedSentence], failure: Failure, now: float
    ) -> list[QueuedSentence]:
        """Put a failed batch back; returns the sentences given up.

        A refused batch of several sentences comes back as single sentences, due at
        once; a refused single sentence is given up. A transient failure backs off
        per sentence (doubling, jittered, at least ``Retry-After``), and a sentence
        that failed ``max_attempts`` times is given up.
        """
        given_up: list[QueuedSentence] = []
        for item in batch:
            item.in_flight = False
            if failure.rejected:
                if len(batch) > 1:
                    item.solo = True
                    continue
                given_up.append(item)
                continue
            if not failure.spent:
                item.not_before = now + max(failure.retry_after_s or 0.0, self._retry_min_s)
                continue
            item.attempts += 1
            if item.attempts >= self._max_attempts:
                given_up.append(item)
                continue
            delay = min(self._retry_max_s, self._retry_min_s * 2 ** (item.attempts - 1))
            delay *= random.uniform(0.8, 1.0)
            if failure.retry_after_s is not None:
                delay = max(delay, failure.retry_after_s)
            item.not_before = now + delay
        for item in given_up:
            self._items.pop(item.key, None)
        return given_up
