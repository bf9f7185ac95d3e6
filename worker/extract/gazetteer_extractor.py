"""The offline extractor: :func:`worker.extract.prose.find_places` over each sentence."""

from __future__ import annotations

from collections.abc import Sequence

from worker.extract.base import Extraction, Place
from worker.extract.gazetteer import Gazetteer
from worker.extract.prose import find_places

__all__ = ["GazetteerExtractor"]


class GazetteerExtractor:
    def __init__(self, gazetteer: Gazetteer) -> None:
        self._gazetteer = gazetteer

    @property
    def version(self) -> str | None:
        return None  # offline and cheap: nothing to remember

    async def extract(self, sentences: Sequence[str], *, background: bool = False) -> Extraction:
        return Extraction(self.find(sentences))

    def find(self, sentences: Sequence[str]) -> list[Place]:
        """The places of ``sentences`` (never fails)."""
        return [
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
            for index, sentence in enumerate(sentences)
            for found in find_places(self._gazetteer, sentence)
        ]

    async def aclose(self) -> None:
        return None
