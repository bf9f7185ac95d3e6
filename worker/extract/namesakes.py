"""Choosing among places of the same name, by the document's other places (pure).

"Syracuse" after "Noto" is the Sicilian one; "Paris" after "Dallas" is still the
French one. A candidate's score is log10 of its population plus the best bonus the
document's other places give it (:class:`PlaceContext`); only candidates of the
highest kind (:data:`KIND_RANK`: a country over a US state over a region or continent
over a city) compete, and one more than :data:`MAX_BONUS` smaller in log10 cannot win.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from worker.extract.gazetteer import Entry

__all__ = ["KIND_RANK", "MAX_BONUS", "PlaceContext", "best_namesake"]

#: Which kind of place a name means first, when places of several kinds share it.
KIND_RANK = {"country": 3, "us_state": 2, "continent": 1, "region": 1, "city": 0}
#: (km, bonus): how much nearness to the document's other places weighs.
_NEAR_BONUS = ((50.0, 3.0), (150.0, 2.5), (400.0, 1.5), (1000.0, 0.75))
#: The largest bonus: a namesake smaller than the largest by more (log10) never wins.
MAX_BONUS = 3.0
_EARTH_KM = 6371.0
#: Points farther apart in latitude than the last bonus's distance earn nothing.
_FAR_RADIANS = 1000.0 / _EARTH_KM
#: Distinct points of the document that count (the latest ones).
_CONTEXT_POINTS = 24


def best_namesake(candidates: Sequence[Entry], context: PlaceContext) -> Entry:
    """The candidate ``context`` makes most likely (see the module docstring)."""
    rank = max(KIND_RANK[e.kind] for e in candidates)
    same_rank = [e for e in candidates if KIND_RANK[e.kind] == rank]
    top = max(_log_population(e) for e in same_rank)
    # A namesake more than MAX_BONUS smaller (in log10) cannot win: not scored.
    contenders = [e for e in same_rank if _log_population(e) + MAX_BONUS >= top]
    return max(contenders, key=lambda e: _log_population(e) + context.bonus(e))


def _log_population(entry: Entry) -> float:
    return math.log10(entry.population + 1)


class PlaceContext:
    """The document's other places, as a candidate's score sees them: the best bonus
    a candidate earns is 3 within 50 km of a place, 2.5 within 150 km, 1.5 within
    400 km, 0.75 within 1000 km; 1.5 for being in a country named, 2 in a US state
    named. Only the last :data:`_CONTEXT_POINTS` distinct points count, so a long
    document costs no more than a short one."""

    __slots__ = ("_countries", "_keys", "_points", "_states")

    def __init__(self, entries: Sequence[Entry]) -> None:
        points: dict[tuple[float, float], None] = {}
        for e in reversed(entries):
            if e.kind in ("city", "region") and len(points) < _CONTEXT_POINTS:
                points.setdefault((round(e.lat, 2), round(e.lng, 2)))
        self._keys = list(points)
        self._points = [(math.radians(lat), math.radians(lng)) for lat, lng in points]
        self._countries = {e.countrycode for e in entries if e.kind == "country"}
        self._states = {e.admin1 for e in entries if e.kind == "us_state"}

    def bonus(self, entry: Entry) -> float:
        best = 0.0
        if entry.countrycode in self._countries:
            best = 1.5
        if entry.countrycode == "US" and entry.admin1 in self._states:
            best = 2.0
        own = (round(entry.lat, 2), round(entry.lng, 2))
        lat, lng = math.radians(entry.lat), math.radians(entry.lng)
        cos_lat = math.cos(lat)
        for (plat, plng), point in zip(self._points, self._keys, strict=True):
            if abs(plat - lat) > _FAR_RADIANS or point == own:
                continue  # far away, or this very place (a name does not vouch for itself)
            h = (
                math.sin((plat - lat) / 2) ** 2
                + cos_lat * math.cos(plat) * math.sin((plng - lng) / 2) ** 2
            )
            km = 2 * _EARTH_KM * math.asin(min(1.0, math.sqrt(h)))
            for limit, near in _NEAR_BONUS:
                if km <= limit:
                    best = max(best, near)
                    break
            if best == MAX_BONUS:
                break
        return best
