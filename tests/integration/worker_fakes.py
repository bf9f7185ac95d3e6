"""Doubles of our own seams for worker tests: an extractor and a reporter."""

from __future__ import annotations

import re
from collections.abc import Sequence

import anyio

from worker.extract import Place
from worker.extract.base import Extraction
from worker.protocol import WorkerMessage


class DictionaryExtractor:
    """Finds every whole-word occurrence of known names; can hold each call."""

    def __init__(
        self, places: dict[str, tuple[float, float]], *, version: str | None = None
    ) -> None:
        self._places = places
        self.version = version
        self.calls: list[list[str]] = []
        self.hold: anyio.Event | None = None
        self.called = anyio.Event()

    async def extract(self, sentences: Sequence[str], *, background: bool = False) -> Extraction:
        self.calls.append(list(sentences))
        self.called.set()
        self.called = anyio.Event()
        if self.hold is not None:
            await self.hold.wait()
        found: list[Place] = []
        for index, sentence in enumerate(sentences):
            for name, (lat, lng) in self._places.items():
                for match in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", sentence):
                    found.append(
                        Place(index, match.start(), name, name + " (test)", lat, lng, "test")
                    )
        found.sort(key=lambda p: (p.sentence_index, p.start))
        return Extraction(found, sentences_sent=len(sentences) if self.version else 0)

    async def aclose(self) -> None:
        pass


class RecordingReporter:
    def __init__(self) -> None:
        self.messages: list[WorkerMessage] = []
        self._changed = anyio.Event()

    def report(self, message: WorkerMessage) -> None:
        self.messages.append(message)
        self._changed.set()
        self._changed = anyio.Event()

    def of_type(self, kind: str) -> list[WorkerMessage]:
        return [m for m in self.messages if m.type == kind]

    def activities(self, kind: str) -> list[WorkerMessage]:
        return [m for m in self.of_type("activity") if getattr(m, "kind", None) == kind]

    async def wait_until(self, predicate: object, within: float = 10) -> None:
        assert callable(predicate)
        with anyio.fail_after(within):
            while not predicate():
                await self._changed.wait()

    async def wait_for(self, kind: str, count: int = 1, within: float = 10) -> list[WorkerMessage]:
        await self.wait_until(lambda: len(self.of_type(kind)) >= count, within)
        return self.of_type(kind)
