from dataclasses import dataclass

import pytest
from pycrdt import Doc, XmlElement, XmlFragment, XmlText

from worker.marks import geo_mark_attrs, plan_marks
from worker.runs import EMBED_CHAR, Block, TextRun, locate_sentence


@dataclass(frozen=True)
class P:
    start: int
    text: str
    name: str = "X"
    lat: float = 1.0
    lng: float = 2.0
    coord_source: str = "test"


def make_run(text: str) -> tuple[Doc, XmlText]:
    doc = Doc()
    fragment = doc.get("prosemirror", type=XmlFragment)
    paragraph = fragment.children.append(XmlElement("paragraph"))
    run = paragraph.children.append(XmlText())
    run.insert(0, text)
    return doc, run


def test_offsets_are_utf8_bytes_and_format_hits_exactly_the_text() -> None:
    text = "København 🇩🇰 via Zürich to Paris."
    _, run = make_run(text)
    tr = TextRun.from_diff(run.diff())
    assert tr.text == text
    start = text.index("Paris")
    run.format(tr.y_offset(start), tr.y_offset(start + 5), {"geoMark": {"colorIndex": 4}})
    assert run.diff() == [
        ("København 🇩🇰 via Zürich to ", None),
        ("Paris", {"geoMark": {"colorIndex": 4.0}}),
        (".", None),
    ]
    after = TextRun.from_diff(run.diff())
    assert after.marked == ((start, start + 5),)
    assert after.color_indexes == (4,)
    assert after.is_marked(start + 2, start + 3)
    assert not after.is_marked(0, start)


def test_embeds_count_as_one_unit() -> None:
    _, run = make_run("To Oslo.")
    run.insert_embed(0, {"image": "x"})
    tr = TextRun.from_diff(run.diff())
    assert tr.text == EMBED_CHAR + "To Oslo."
    start = tr.text.index("Oslo")
    run.format(tr.y_offset(start), tr.y_offset(start + 4), {"geoMark": {"colorIndex": 0}})
    assert [chunk for chunk, attrs in run.diff() if attrs] == ["Oslo"]


def test_locate_sentence_prefers_the_occurrence_nearest_the_hint() -> None:
    text = "Go to Rome. Go to Rome."
    assert locate_sentence(text, "Go to Rome.", 10) == 12
    assert locate_sentence(text, "Go to Rome.", 0) == 0
    assert locate_sentence(text, "Go to Paris.", 0) is None


def test_plan_marks_rechecks_text_and_existing_marks() -> None:
    sentence = "From Paris to Paris."
    block = Block.from_parts([TextRun.from_diff([("Hey. " + sentence, None)])])
    places = [P(5, "Paris"), P(14, "Paris"), P(0, "Nope"), P(5, "Paris")]
    plan = plan_marks(block, sentence, 5, places)
    assert plan is not None
    assert [(m.part, m.y_start, m.y_end) for m in plan] == [(0, 10, 15), (0, 19, 24)]


def test_plan_marks_follows_text_inserted_before_the_sentence() -> None:
    sentence = "We met in Zürich."
    block = Block.from_parts([TextRun.from_diff([("Inserted meanwhile. " + sentence, None)])])
    plan = plan_marks(block, sentence, 0, [P(10, "Zürich")])
    assert plan is not None and len(plan) == 1
    mark = plan[0]
    assert mark.y_start == len("Inserted meanwhile. We met in ")  # ASCII: bytes == chars
    assert mark.y_end - mark.y_start == len("Zürich".encode())


def test_plan_marks_skips_edited_sentences_and_marked_spans() -> None:
    block = Block.from_parts([TextRun.from_diff([("We met in Zürich!", None)])])
    assert plan_marks(block, "We met in Zürich.", 0, [P(10, "Zürich")]) is None
    marked = TextRun.from_diff(
        [("We met in ", None), ("Zürich", {"geoMark": {"colorIndex": 0}}), (".", None)]
    )
    assert plan_marks(Block.from_parts([marked]), "We met in Zürich.", 0, [P(10, "Zürich")]) == []


def test_block_joins_runs_across_hard_breaks_and_marks_within_one_run() -> None:
    first = TextRun.from_diff([("We left Paris", None)])
    second = TextRun.from_diff([("and reached Rome.", None)])
    block = Block.from_parts([first, None, second])
    assert block.text == "We left Paris\nand reached Rome."
    sentence = block.text
    places = [P(8, "Paris"), P(26, "Rome"), P(8, "Paris\nand")]
    plan = plan_marks(block, sentence, 0, places)
    assert plan is not None
    assert [(m.part, m.y_start, m.y_end) for m in plan] == [(0, 8, 13), (2, 12, 16)]


@pytest.mark.parametrize(("value", "text"), [(48.8566, "48.8566"), (0.0, "0"), (-0.0000001, "0")])
def test_geo_mark_attrs(value: float, text: str) -> None:
    attrs = geo_mark_attrs(P(0, "Paris", "Paris, France", value, 2.35, "gazetteer"), 7)
    assert attrs["lat"] == text
    assert attrs["lng"] == "2.35"
    assert attrs["colorIndex"] == 7
    assert attrs["placeName"] == "Paris, France"
    assert attrs["coordSource"] == "gazetteer"
    assert attrs["geoId"] != geo_mark_attrs(P(0, "Paris"), 7)["geoId"]
