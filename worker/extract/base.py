"""The extractor seam: :class:`Place` records and the :class:`Extractor` protocol.

An extractor turns finished sentences into an :class:`Extraction`: the places found
and, apart, the sentences it could not extract (a failed call is not "no places").
Each :class:`Place` names the sentence it was found in and the exact text at
``start`` (Python code-point offset), so the marks layer can re-find and re-check
the span before formatting it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from worker.config import WorkerSettings
    from worker.memory import Failure

__all__ = ["Extraction", "Extractor", "Place", "make_extractor"]


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


@dataclass(frozen=True, slots=True)
class Extraction:
    """The answer for one batch: every sentence is extracted, or none is.

    ``failure`` set: no sentence of the batch was extracted (``places`` is empty);
    else every sentence was, and one without a place has none.
    """

    places: list[Place] = field(default_factory=list)
    failure: Failure | None = None
    #: Sentences sent to a model (0 for an offline extractor).
    sentences_sent: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.failure is None


class Extractor(Protocol):
    #: The version results are remembered under, or None: not worth remembering.
    @property
    def version(self) -> str | None: ...

    async def extract(self, sentences: Sequence[str], *, background: bool = False) -> Extraction:
        """``background``: a first pass, which leaves part of the call budget to typing."""
        ...

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
