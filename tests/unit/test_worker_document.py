"""DocumentView on in-memory pycrdt documents (no network)."""

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, XmlElement, XmlFragment, XmlText

from worker.document import DocumentView


@dataclass(frozen=True)
class P:
    sentence_index: int
    start: int
    text: str
    name: str = "Rome, Italy"
    lat: float = 41.9
    lng: float = 12.5
    coord_source: str = "test"


def exchange(a: Doc, b: Doc) -> None:
    update_a, update_b = a.get_update(b.get_state()), b.get_update(a.get_state())
    b.apply_update(update_a)
    a.apply_update(update_b)


def marks(doc: Doc) -> list[str]:
    fragment = doc.get("prosemirror", type=XmlFragment)
    return [
        chunk
        for paragraph in fragment.children
        for run in paragraph.children
        if isinstance(run, XmlText)
        for chunk, attrs in run.diff()
        if attrs and attrs.get("geoMark")
    ]


def test_remote_text_is_pending_once_and_own_marks_do_not_retrigger() -> None:
    human, agent = Doc(), Doc()
    changes: list[int] = []
    view = DocumentView(agent, "prosemirror", on_remote_change=lambda: changes.append(1))
    fragment = human.get("prosemirror", type=XmlFragment)
    paragraph = fragment.children.append(XmlElement("paragraph"))
    paragraph.children.append(XmlText("We saw Rome. Unfinished"))
    exchange(human, agent)
    assert changes == [1]
    pending = view.take_pending(set())
    assert [p.text for p in pending] == ["We saw Rome."]
    applied, done = view.apply([(pending[0], [P(0, 7, "Rome")])])
    assert [m.text for m in applied] == ["Rome"] and done == {pending[0].key}
    assert changes == [1]  # the agent's own transaction is not a remote change
    assert view.take_pending(done) == []
    exchange(human, agent)
    assert marks(human) == ["Rome"]


def test_mark_racing_a_concurrent_edit_is_taken_off_again() -> None:
    human, agent = Doc(), Doc()
    view = DocumentView(agent, "prosemirror", on_remote_change=lambda: None)
    fragment = human.get("prosemirror", type=XmlFragment)
    run = fragment.children.append(XmlElement("paragraph")).children.append(XmlText("We saw Rome."))
    exchange(human, agent)
    pending = view.take_pending(set())
    # The human replaces "Rome" by "Roma" while the agent marks "Rome" (not synced yet).
    del run[7:11]
    run.insert(7, "Roma")
    view.apply([(pending[0], [P(0, 7, "Rome")])])
    exchange(human, agent)  # the concurrent changes merge
    view.take_pending({pending[0].key})  # the remote change is scanned; stale marks go
    exchange(human, agent)
    assert str(run.diff()[0][0]) + "".join(str(c) for c, _ in run.diff()[1:]) == "We saw Roma."
    assert marks(human) == []
    assert marks(agent) == []


def test_a_remote_terminator_is_reported_as_a_sentence_end() -> None:
    human, agent = Doc(), Doc()
    calls: list[str] = []
    DocumentView(
        agent,
        "prosemirror",
        on_remote_change=lambda: calls.append("change"),
        on_sentence_end=lambda: calls.append("end"),
    )
    fragment = human.get("prosemirror", type=XmlFragment)
    paragraph = fragment.children.append(XmlElement("paragraph"))
    run = paragraph.children.append(XmlText("We saw Rome"))
    exchange(human, agent)
    assert calls == ["change"]
    run.insert(len(run), ".")
    exchange(human, agent)
    assert calls == ["change", "end", "change"]
    run.insert(len(run), " Then")
    exchange(human, agent)
    assert calls == ["change", "end", "change", "change"]


def paragraph_with(
    fragment: XmlFragment | XmlElement, text: str, index: int | None = None
) -> XmlText:
    element = XmlElement("paragraph")
    if index is None:
        element = fragment.children.append(element)
    else:
        fragment.children.insert(index, element)
        element = fragment.children[index]
    return element.children.append(XmlText(text))


def test_structure_changed_between_taking_and_marking() -> None:
    human, agent = Doc(), Doc()
    view = DocumentView(agent, "prosemirror", on_remote_change=lambda: None)
    fragment = human.get("prosemirror", type=XmlFragment)
    paragraph_with(fragment, "We saw Rome.")
    paragraph_with(fragment, "Then Rome again.")
    exchange(human, agent)
    first, second = view.take_pending(set())
    # Meanwhile a paragraph is inserted before both, and the second one is deleted.
    paragraph_with(fragment, "A title", index=0)
    del fragment.children[2]
    exchange(human, agent)
    applied, done = view.apply([(first, [P(0, 7, "Rome")]), (second, [P(0, 5, "Rome")])])
    assert [m.text for m in applied] == ["Rome"] and done == {first.key}
    exchange(human, agent)
    assert marks(human) == ["Rome"]
    assert str(fragment.children[0]) == "<paragraph>A title</paragraph>"


def test_pending_sentences_come_in_document_order_after_inserts() -> None:
    human, agent = Doc(), Doc()
    view = DocumentView(agent, "prosemirror", on_remote_change=lambda: None)
    fragment = human.get("prosemirror", type=XmlFragment)
    last = paragraph_with(fragment, "Last")
    exchange(human, agent)
    assert view.take_pending(set()) == []
    last.insert(len(last), " one.")
    quote = XmlElement("blockquote")
    fragment.children.insert(0, quote)
    paragraph_with(fragment.children[0], "Quoted first.")
    paragraph_with(fragment, "Middle.", index=1)
    exchange(human, agent)
    assert [p.text for p in view.take_pending(set())] == ["Quoted first.", "Middle.", "Last one."]
    del fragment.children[0]  # the blockquote and its paragraph
    exchange(human, agent)
    assert view.take_pending(set()) == []


def test_typing_inside_a_paragraph_does_not_walk_the_document(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import worker.document

    walks: list[int] = []
    real = worker.document._blocks_of

    def counted(node):  # type: ignore[no-untyped-def]
        walks.append(1)
        return real(node)

    monkeypatch.setattr(worker.document, "_blocks_of", counted)
    human, agent = Doc(), Doc()
    view = DocumentView(agent, "prosemirror", on_remote_change=lambda: None)
    fragment = human.get("prosemirror", type=XmlFragment)
    runs = [paragraph_with(fragment, f"Paragraph {i}") for i in range(20)]
    exchange(human, agent)
    view.take_pending(set())
    walked = len(walks)
    processed: set[str] = set()
    for i in range(5):
        runs[7].insert(len(runs[7]), f" We went to Rome {i}.")
        exchange(human, agent)
        (pending,) = view.take_pending(processed)
        _, done = view.apply([(pending, [P(0, pending.text.index("Rome"), "Rome")])])
        processed |= done
    assert len(walks) == walked
    exchange(human, agent)
    assert marks(human) == ["Rome"] * 5
    paragraph_with(fragment, "New.")
    exchange(human, agent)
    assert [p.text for p in view.take_pending(set())] == ["New."]
    assert len(walks) > walked


@given(
    st.lists(
        st.tuples(st.sampled_from(["insert", "nest", "delete", "type"]), st.integers(0, 30)),
        max_size=25,
    )
)
@settings(max_examples=60, deadline=None)
def test_block_index_matches_a_fresh_walk_after_any_edits(ops: list[tuple[str, int]]) -> None:
    from worker.document import _blocks_of

    human, agent = Doc(), Doc()
    view = DocumentView(agent, "prosemirror", on_remote_change=lambda: None)
    fragment = human.get("prosemirror", type=XmlFragment)
    paragraph_with(fragment, "Start.")
    exchange(human, agent)
    view.take_pending(set())
    for op, n in ops:
        size = len(fragment.children)
        if op == "insert":
            paragraph_with(fragment, f"Para {n}.", index=n % (size + 1))
        elif op == "nest":
            fragment.children.insert(n % (size + 1), XmlElement("blockquote"))
            paragraph_with(fragment.children[n % (size + 1)], f"Quote {n}.")
        elif op == "delete" and size:
            del fragment.children[n % size]
        elif op == "type":
            blocks = list(_blocks_of(fragment))
            if blocks:
                run = next(c for c in blocks[n % len(blocks)].children if isinstance(c, XmlText))
                run.insert(len(run), f" More {n}.")
        exchange(human, agent)
        mine = agent.get("prosemirror", type=XmlFragment)
        texts = [p.text for p in view.take_pending(set())]
        assert list(view._block_index()) == [hash(b) for b in _blocks_of(mine)]
        assert all(t.endswith(".") for t in texts)
