"""Place extractors: the offline gazetteer (default) and an LLM (OpenAI-compatible).

``make_extractor(settings)`` picks one; both return :class:`Place` records whose
``text`` occurs exactly at ``start`` in the named sentence. The LLM extractor (and the
``openai`` package) is imported only when it is chosen.
"""

from worker.extract.base import Extractor, Place, make_extractor
from worker.extract.gazetteer import Gazetteer, load_gazetteer

__all__ = ["Extractor", "Gazetteer", "Place", "load_gazetteer", "make_extractor"]
