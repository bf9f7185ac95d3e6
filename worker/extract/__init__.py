"""Place extractors: the offline gazetteer (default) and an LLM (OpenAI-compatible).

:func:`make_extractor` picks one from the settings; every extractor returns
:class:`Place` records whose ``text`` occurs exactly at ``start`` in the named
sentence (:mod:`~worker.extract.base`, the seam). The offline one is
:mod:`~worker.extract.gazetteer_extractor`: :mod:`~worker.extract.prose` finds the
names of :mod:`~worker.extract.gazetteer` in a sentence, using the word lists of
:mod:`~worker.extract.lexicon`, and :mod:`~worker.extract.namesakes` chooses among
places of one name. The LLM one is :mod:`~worker.extract.llm`, with its client
(:mod:`~worker.extract.llm_client`), its answer checks
(:mod:`~worker.extract.llm_answer`) and its call budget
(:mod:`~worker.extract.budget`).

This package imports only the standard library, its dependencies and, of the
worker, :mod:`worker.config`, :mod:`worker.errors` and :mod:`worker.memory`. The LLM
extractor (and the ``openai`` package) is imported only when it is chosen.
"""

from worker.extract.base import Extractor, Place, make_extractor
from worker.extract.gazetteer import Gazetteer, load_gazetteer

__all__ = ["Extractor", "Gazetteer", "Place", "load_gazetteer", "make_extractor"]
