"""DocumentView on in-memory pycrdt documents (no network)."""

from dataclasses import dataclass

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
