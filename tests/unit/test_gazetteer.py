"""The offline gazetteer on tricky prose."""

from __future__ import annotations

import pytest

from worker.extract import Place, load_gazetteer
from worker.extract.gazetteer_extractor import GazetteerExtractor

pytestmark = pytest.mark.anyio


async def _places(sentence: str) -> list[Place]:
    places = GazetteerExtractor(load_gazetteer()).find([sentence])
    for p in places:
        assert sentence[p.start : p.start + len(p.text)] == p.text
        assert -90 <= p.lat <= 90 and -180 <= p.lng <= 180
        assert p.coord_source == "gazetteer"
    return places


async def _texts(sentence: str) -> list[str]:
    return [p.text for p in await _places(sentence)]


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("Next we saw Buenos Aires and New Jersey.", ["Buenos Aires", "New Jersey"]),
        (
            "The Czech Republic and Rio de Janeiro were highlights.",
            ["Czech Republic", "Rio de Janeiro"],
        ),
        ("My sister, Savannah, loves the beach.", []),
        ("Spring is lovely.", []),
        ("Fred came too.", []),
        ("The Euro is strong.", []),
        ("Nice weather today.", []),
        ("Reading a book on the train.", []),
        ("Mobile phones are banned.", []),
        ("We watched the sunset from Lake Michigan.", []),
        ("Can you believe it?", []),
        ("Jordan told me about Petra.", ["Petra"]),
        ("I met Paris Hilton once.", []),
        ("From Nice we took the train to Monaco.", ["Nice", "Monaco"]),
        ("The UK, the USA and the UAE.", ["UK", "USA", "UAE"]),
        ("NYC and LA are far apart.", ["NYC", "LA"]),
        ("We drove through Norway's fjords.", ["Norway"]),
    ],
)
async def test_tricky_prose(sentence: str, expected: list[str]) -> None:
    assert await _texts(sentence) == expected


async def test_region_disambiguates_and_is_not_marked() -> None:
    places = await _places(
        "Paris, Texas, is small; Savannah, GA, and Asheville, North Carolina, are not."
    )
    assert [(p.text, p.name) for p in places] == [
        ("Paris", "Paris, Texas, United States"),
        ("Savannah", "Savannah, Georgia, United States"),
        ("Asheville", "Asheville, North Carolina, United States"),
    ]


async def test_population_picks_the_famous_one() -> None:
    (paris,) = await _places("We flew to Paris.")
    assert paris.name == "Paris, France"


async def test_two_occurrences_give_two_places() -> None:
    places = await _places("Paris in spring, then Paris again in autumn.")
    assert [(p.text, p.start) for p in places] == [("Paris", 0), ("Paris", 22)]


async def test_unicode_offsets_are_code_points() -> None:
    sentence = "København 🇩🇰 via Zürich to Paris."
    places = await _places(sentence)
    assert [(p.text, p.start) for p in places] == [
        ("København", 0),
        ("Zürich", 17),
        ("Paris", 27),
    ]
    assert places[0].name == "Copenhagen, Denmark"


async def test_sentence_index_and_kinds() -> None:
    extractor = GazetteerExtractor(load_gazetteer())
    places = extractor.find(["Nothing here.", "Ohio, Europe and Peru."])
    assert [(p.sentence_index, p.name) for p in places] == [
        (1, "Ohio, United States"),
        (1, "Europe"),
        (1, "Peru"),
    ]


async def test_load_gazetteer_is_a_singleton() -> None:
    assert load_gazetteer() is load_gazetteer()
