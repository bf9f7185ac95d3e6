"""The extractor seam: :class:`Place` records and the :class:`Extractor` protocol.

An extractor turns finished sentences into places. Each :class:`Place` names the
sentence it was found in and the exact text at ``start`` (Python code-point offset),
so the marks layer can re-find and re-check the span before formatting it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from worker.config import WorkerSettings

__all__ = ["Extractor", "Place", "make_extractor"]


@dataclass(frozen=True, slots=True)
class Place:
    sentence_index: int
    start: int
    text: str
    name: str
    lat: float
    lng: float
    coord_source: str
    geonames_id: str | None = None


class Extractor(Protocol):
    async def extract(self, sentences: Sequence[str]) -> list[Place]: ...

    async def aclose(self) -> None: ...


def make_extractor(
    settings: WorkerSettings, *, on_llm_call: Callable[..., None] | None = None
) -> Extractor:
    """The extractor ``settings`` ask for (``EXTRACTOR``, resolved)."""
    from worker.extract.gazetteer import load_gazetteer
    from worker.extract.gazetteer_extractor import GazetteerExtractor

    if settings.resolved_extractor() == "llm":
        from worker.extract.llm import LlmExtractor

        return LlmExtractor(settings, gazetteer=load_gazetteer(), on_llm_call=on_llm_call)
    return GazetteerExtractor(load_gazetteer())
