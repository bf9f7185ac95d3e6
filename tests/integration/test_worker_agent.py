"""The agent against a real y-websocket server, with a pycrdt client as the human."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from pycrdt import Doc, XmlFragment, XmlText
from worker_fakes import DictionaryExtractor, RecordingReporter
from ywebsocket_server import HumanClient, YServer

from worker.agent import Agent
from worker.backoff import Backoff
from worker.config import AGENT_TOKEN_HEADER, WorkerSettings

pytestmark = pytest.mark.anyio

PLACES = {
    "Paris": (48.85341, 2.3488),
    "Zürich": (47.36667, 8.55),
    "København": (55.67594, 12.56553),
    "Rome": (41.89193, 12.51133),
    "Oslo": (59.91273, 10.74609),
    "Berlin": (52.52437, 13.41053),
    "Lyon": (45.74846, 4.84671),
}
DOC_ID = "doc/ä 1"
DOC_PATH = "/doc%2F%C3%A4%201"


def settings_for(server: YServer, **overrides: object) -> WorkerSettings:
    values: dict[str, object] = {
        "doc_ws_url": server.url("/{document_id}"),
        "sentence_debounce_ms": 50,
        "sentence_max_wait_ms": 400,
        "metrics_interval_s": 0.2,
        "docserver_agent_token": "s3cret",
    }
    values.update(overrides)
    return WorkerSettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def server() -> AsyncIterator[YServer]:
    async with YServer().running() as running:
        yield running


@asynccontextmanager
async def agent_running(
    server: YServer,
    extractor: DictionaryExtractor,
    reporter: RecordingReporter,
    *,
    wait_synced: bool = True,
    **overrides: object,
) -> AsyncIterator[Agent]:
    agent = Agent(
        settings_for(server, **overrides),
        DOC_ID,
        agent_id="agent-1",
        reporter=reporter,
        extractor=extractor,
        backoff=Backoff(initial_s=0.2, max_s=1.0),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        if wait_synced:
            with anyio.fail_after(5):
                await agent.synced.wait()
        yield agent
        await agent.stop()


@asynccontextmanager
async def human(server: YServer) -> AsyncIterator[HumanClient]:
    async with HumanClient(server.url(DOC_PATH)).connected() as client:
        yield client


def type_chars(run: object, text: str, at: int | None = None) -> None:
    """Type one character per transaction, like a person."""
    assert isinstance(run, XmlText)
    offset = len(run) if at is None else at
    for ch in text:
        run.insert(offset, ch)
        offset += len(ch.encode())


async def test_unicode_marks_exactly_the_place_text(server: YServer) -> None:
    reporter, extractor = RecordingReporter(), DictionaryExtractor(PLACES)
    async with agent_running(server, extractor, reporter), human(server) as ann:
        ann.add_paragraph("Hej! Vi tog fra Rome 🇮🇹. København 🇩🇰 via Zürich to Paris.")
        await ann.wait_for(lambda: len(ann.marks()) == 4)
        assert ann.marked_texts() == ["Rome", "København", "Zürich", "Paris"]
        attrs = dict(ann.marks())
        assert attrs["Paris"]["placeName"] == "Paris (test)"
        assert attrs["Paris"]["lat"] == "48.85341"
        assert attrs["Paris"]["lng"] == "2.3488"
        assert attrs["Paris"]["coordSource"] == "test"
        assert sorted(a["colorIndex"] for a in attrs.values()) == [0, 1, 2, 3]
        assert len({a["geoId"] for a in attrs.values()}) == 4
        assert ann.text() == "Hej! Vi tog fra Rome 🇮🇹. København 🇩🇰 via Zürich to Paris."
        marked = await reporter.wait_for("location_marked", 4)
        assert {m.place_name for m in marked} == {f"{n} (test)" for n in attrs}  # type: ignore[union-attr]
    assert reporter.of_type("connected")[0].document_id == DOC_ID  # type: ignore[union-attr]
    assert any(h.get(AGENT_TOKEN_HEADER) == "s3cret" for h in server.handshake_headers)


async def test_first_sentence_typed_into_an_empty_document(server: YServer) -> None:
    reporter, extractor = RecordingReporter(), DictionaryExtractor(PLACES)
    async with agent_running(server, extractor, reporter), human(server) as ann:
        (run,) = ann.add_paragraph("")
        type_chars(run, "I love Oslo")
        type_chars(run, ".")
        await ann.wait_for(lambda: ann.marked_texts() == ["Oslo"])
        assert ann.marks()[0][1]["colorIndex"] == 0
        await reporter.wait_for("activity")


async def test_text_present_before_the_agent_connects_is_processed(server: YServer) -> None:
    reporter, extractor = RecordingReporter(), DictionaryExtractor(PLACES)
    async with human(server) as ann:
        ann.add_paragraph("Typed before the agent came: Lyon.")
        async with agent_running(server, extractor, reporter):
            await ann.wait_for(lambda: ann.marked_texts() == ["Lyon"])


async def test_paragraphs_and_hard_breaks(server: YServer) -> None:
    reporter, extractor = RecordingReporter(), DictionaryExtractor(PLACES)
    async with agent_running(server, extractor, reporter), human(server) as ann:
        ann.add_paragraph("We left Paris", None, "and reached Rome. Then Oslo", None, "was next.")
        ann.add_paragraph("Berlin was cold. Lyon is not finished")
        ann.add_paragraph("Zürich!")
        await ann.wait_for(lambda: len(ann.marks()) == 5)
        assert ann.marked_texts() == ["Paris", "Rome", "Oslo", "Berlin", "Zürich"]
        assert [str(r.diff()[0][0]) for r in ann.runs()][:3] == [
            "We left ",
            "and reached ",
            "was next.",
        ]


async def test_sentence_edited_after_marking_is_processed_again(server: YServer) -> None:
    reporter, extractor = RecordingReporter(), DictionaryExtractor(PLACES)
    async with agent_running(server, extractor, reporter), human(server) as ann:
        (run,) = ann.add_paragraph("I went to Paris.")
        await ann.wait_for(lambda: ann.marked_texts() == ["Paris"])
        calls = len(extractor.calls)
        offset = len(b"I went to Paris")
        type_chars(run, " and Rome", at=offset)
        await ann.wait_for(lambda: ann.marked_texts() == ["Paris", "Rome"])
        assert extractor.calls[calls:] == [["I went to Paris and Rome."]]
        colors = [a["colorIndex"] for _, a in ann.marks()]
        assert colors == [0, 1]


async def test_two_occurrences_of_one_place(server: YServer) -> None:
    reporter, extractor = RecordingReporter(), DictionaryExtractor(PLACES)
    async with agent_running(server, extractor, reporter), human(server) as ann:
        ann.add_paragraph("Paris in spring, Paris in fall. And Paris again!")
        await ann.wait_for(lambda: len(ann.marks()) == 3)
        assert ann.marked_texts() == ["Paris", "Paris", "Paris"]
        assert len({a["geoId"] for _, a in ann.marks()}) == 3


async def test_typing_during_extraction_never_misplaces_a_mark(server: YServer) -> None:
    reporter, extractor = RecordingReporter(), DictionaryExtractor(PLACES)
    extractor.hold = anyio.Event()
    async with agent_running(server, extractor, reporter) as agent, human(server) as ann:
        (run,) = ann.add_paragraph("We met in Zürich. We saw Rome.")
        with anyio.fail_after(5):
            await extractor.called.wait()
        # While the extractor works: text typed before both sentences, and the
        # second sentence edited so "Rome" no longer reads as it did.
        type_chars(run, "Hello there. ", at=0)
        rome = len("Hello there. We met in Zürich. We saw ".encode())
        del run[rome : rome + len("Rome")]
        type_chars(run, "Roma", at=rome)
        expected = "Hello there. We met in Zürich. We saw Roma."
        await wait_doc(agent.doc, lambda: doc_text(agent.doc) == expected)
        extractor.hold.set()
        extractor.hold = None
        await ann.wait_for(lambda: ann.marked_texts() == ["Zürich"])
        # The edited sentence comes back through the edit: "Roma" is no known place.
        with anyio.fail_after(5):
            while not any("We saw Roma." in call for call in extractor.calls):
                await extractor.called.wait()
        assert ann.text() == expected
        assert ann.marked_texts() == ["Zürich"]


def doc_text(doc: Doc) -> str:
    fragment = doc.get("prosemirror", type=XmlFragment)
    return "\n".join(
        "".join(c for c, _ in run.diff() if isinstance(c, str))
        for paragraph in fragment.children
        for run in paragraph.children
        if isinstance(run, XmlText)
    )


async def wait_doc(doc: Doc, predicate: Callable[[], bool], within: float = 5) -> None:
    changed = anyio.Event()

    def on_change(_event: object) -> None:
        nonlocal changed
        changed.set()

    subscription = doc.observe(on_change)
    try:
        with anyio.fail_after(within):
            while not predicate():
                await changed.wait()
                changed = anyio.Event()
    finally:
        doc.unobserve(subscription)


async def test_agent_edits_do_not_trigger_extraction(server: YServer) -> None:
    reporter, extractor = RecordingReporter(), DictionaryExtractor(PLACES)
    async with agent_running(server, extractor, reporter) as agent, human(server) as ann:
        ann.add_paragraph("To Oslo.")
        await ann.wait_for(lambda: ann.marked_texts() == ["Oslo"])
        batches = agent.batches_done
        ann.add_paragraph("To Rome.")
        await ann.wait_for(lambda: ann.marked_texts() == ["Oslo", "Rome"])
        assert extractor.calls == [["To Oslo."], ["To Rome."]]
        assert agent.batches_done >= batches + 1


async def test_server_restart_reconnects_and_loses_nothing() -> None:
    reporter, extractor = RecordingReporter(), DictionaryExtractor(PLACES)
    server = YServer()
    async with server.running():
        pass  # learn a free port; the server comes back on it below
    ann = HumanClient(server.url(DOC_PATH))
    async with agent_running(server, extractor, reporter, wait_synced=False) as agent:
        async with server.running():
            with anyio.fail_after(5):
                await agent.synced.wait()
            async with ann.connected():
                ann.add_paragraph("First Paris.")
                await ann.wait_for(lambda: ann.marked_texts() == ["Paris"])
        # The server is gone; the human keeps typing offline.
        ann.add_paragraph("Then Rome.")
        sessions = agent.connection.sessions
        async with server.running(), ann.connected():
            await ann.wait_for(lambda: ann.marked_texts() == ["Paris", "Rome"], within=15)
            assert agent.connection.sessions > sessions
            ann.add_paragraph("And Oslo.")
            await ann.wait_for(lambda: ann.marked_texts() == ["Paris", "Rome", "Oslo"])
    persisted = HumanClient(server.url(DOC_PATH))
    async with server.running(), persisted.connected():
        assert persisted.text() == "First Paris.\nThen Rome.\nAnd Oslo."
        assert persisted.marked_texts() == ["Paris", "Rome", "Oslo"]


async def test_broken_message_from_the_server_is_survived(server: YServer) -> None:
    reporter, extractor = RecordingReporter(), DictionaryExtractor(PLACES)
    async with agent_running(server, extractor, reporter) as agent, human(server) as ann:
        ann.add_paragraph("Before Oslo.")
        await ann.wait_for(lambda: ann.marked_texts() == ["Oslo"])
        sessions = agent.connection.sessions
        reconnected = server.connected
        await server.send_raw(
            b"\x01\x05\x03\xff\xff\x00", header=AGENT_TOKEN_HEADER
        )  # garbage awareness: ignored
        await server.send_raw(
            b"\x07junk", header=AGENT_TOKEN_HEADER
        )  # unknown message type: ignored
        await server.send_raw(
            b"\x00\x02\x08notanupd", header=AGENT_TOKEN_HEADER
        )  # broken sync update: reconnect
        with anyio.fail_after(10):
            await reconnected.wait()
        ann.add_paragraph("After Rome.")
        await ann.wait_for(lambda: ann.marked_texts() == ["Oslo", "Rome"])
        assert agent.connection.sessions == sessions + 1


async def test_metrics_activity_and_abandonment_reports(server: YServer) -> None:
    """``ABANDON_AFTER_MS`` set (a third-party server): nobody seen -> abandoned."""
    reporter, extractor = RecordingReporter(), DictionaryExtractor(PLACES)
    async with agent_running(server, extractor, reporter, abandon_after_ms=300):
        async with human(server) as ann:
            ann.add_paragraph("Hi.")
            await reporter.wait_until(lambda: reporter.activities("edit"))
            metrics = await reporter.wait_for("metrics", 2)
            assert all(m.memory_mb > 10 for m in metrics)  # type: ignore[union-attr]
            assert metrics[-1].websocket_latency_ms is not None  # type: ignore[union-attr]
            assert not reporter.activities("abandoned")
        await reporter.wait_until(lambda: reporter.activities("abandoned"))


async def test_no_abandonment_by_default_even_with_a_silent_client(server: YServer) -> None:
    """Issue 14 #1/#3: with the default settings a client whose awareness state
    stays ``{}`` (plain y-websocket) never makes the agent leave on its own: the
    docserver alone decides presence."""
    reporter, extractor = RecordingReporter(), DictionaryExtractor(PLACES)
    async with agent_running(server, extractor, reporter):
        async with human(server) as ann:
            ann.add_paragraph("Hi.")
            await reporter.wait_until(lambda: reporter.activities("edit"))
        seen = len(reporter.of_type("metrics"))
        await reporter.wait_for("metrics", seen + 5)  # 1 s of reports with nobody there
        assert not reporter.activities("abandoned")


async def test_a_handed_over_memory_is_reused_and_a_retry_is_sent_again(server: YServer) -> None:
    from worker.memory import result_key
    from worker.protocol import ExtractionReport, MemoryEntry, MemoryHandover, RememberedPlace

    version = "llm/fake/p1"
    known, pending = "We saw Rome.", "Then Oslo."
    rome = RememberedPlace(text="Rome", name="Rome (memory)", lat=41.9, lng=12.5, coord_source="m")
    handed = MemoryHandover(
        entries=[
            MemoryEntry(key=result_key(known), extractor=version, status="done", places=[rome]),
            MemoryEntry(key=result_key(pending), extractor=version, status="retry", attempts=2),
        ]
    )
    extractor = DictionaryExtractor(PLACES, version=version)
    reporter = RecordingReporter()
    async with human(server) as ann:
        ann.add_paragraph(f"{known} {pending} ")
        async with agent_running(server, extractor, reporter, memory_wait_s=5) as agent:
            agent.hand_over(handed)
            await ann.wait_for(lambda: sorted(ann.marked_texts()) == ["Oslo", "Rome"])
    # Only the sentence not extracted before went to the model.
    assert extractor.calls == [[pending]]
    assert dict(ann.marks())["Rome"]["placeName"] == "Rome (memory)"
    reports = [m for m in reporter.messages if isinstance(m, ExtractionReport)]
    entries = [e for r in reports for e in r.entries]
    assert [(e.key, e.status) for e in entries] == [(result_key(pending), "done")]
    assert sum(r.cache_hits for r in reports) == 1
    assert sum(r.sentences_sent for r in reports) == 1
    assert {k for r in reports for k in r.seen} == {result_key(known)}
