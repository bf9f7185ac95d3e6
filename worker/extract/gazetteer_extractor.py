"""The offline extractor: :func:`worker.extract.prose.find_places` over each sentence.

One extractor serves one document, so it remembers the places it has found there
(the last :data:`MEMORY` of them): a later "Syracuse" near an earlier "Noto" is the
Sicilian one. The memory lives as long as the worker; a new worker starts it afresh.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from worker.extract.base import Extraction, Place
from worker.extract.gazetteer import Entry, Gazetteer
from worker.extract.prose import find_places

__all__ = ["MEMORY", "GazetteerExtractor"]

#: How many of the document's places are kept as context for choosing among namesakes.
MEMORY = 64


class GazetteerExtractor:
    def __init__(self, gazetteer: Gazetteer) -> None:
        self._gazetteer = gazetteer
        self._near: deque[Entry] = deque(maxlen=MEMORY)

    @property
    def version(self) -> str | None:
        return None  # offline and cheap: nothing to remember

    async def extract(self, sentences: Sequence[str], *, background: bool = False) -> Extraction:
        return Extraction(self.find(sentences))

    def find(self, sentences: Sequence[str]) -> list[Place]:
        """The places of ``sentences`` (never fails); namesakes near the document's
        places found so far win."""
        places: list[Place] = []
        for index, sentence in enumerate(sentences):
            for found in find_places(self._gazetteer, sentence, near=tuple(self._near)):
                places.append(
                    Place(
                        sentence_index=index,
                        start=found.start,
                        text=found.text,
                        name=found.entry.display,
                        lat=found.entry.lat,
                        lng=found.entry.lng,
                        coord_source="gazetteer",
                        geonames_id=found.entry.geonames_id,
                    )
                )
                if found.entry not in self._near:
                    self._near.append(found.entry)
        return places

    async def aclose(self) -> None:
        return None
