"""The extraction memory's pure core: keys, the memory, the queue's decisions."""

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.memory import (
    MAX_ATTEMPTS,
    ExtractionMemory,
    ExtractionQueue,
    Failure,
    find_remembered,
    result_key,
)
from worker.protocol import MemoryEntry, RememberedPlace

PARIS = RememberedPlace(text="Paris", name="Paris, France", lat=48.8, lng=2.3, coord_source="x")


def test_the_key_is_the_normalised_text() -> None:
    assert result_key("We  stayed in\nParis.") == result_key(" We stayed in Paris. ")
    assert result_key("Cafe\u0301 in Paris.") == result_key("Caf\u00e9 in Paris.")
    assert result_key("We stayed in Paris.") != result_key("We stayed in Rome.")


def test_remembered_places_are_found_as_whole_words_in_each_occurrence() -> None:
    found = list(find_remembered("Paris, Parisian Paris.", [PARIS]))
    assert [start for start, _ in found] == [0, 16]


def test_memory_takes_its_own_version_and_never_forgets_a_done_result() -> None:
    memory = ExtractionMemory("llm/m/p1")
    done = MemoryEntry(key="a", extractor="llm/m/p1", status="done", places=[PARIS])
    other = MemoryEntry(key="b", extractor="llm/other/p1", status="done")
    assert memory.load([done, other]) == 1
    retry = MemoryEntry(key="a", extractor="llm/m/p1", status="retry", attempts=2)
    assert memory.load([retry]) == 0
    assert memory.get("a") == done and memory.get("b") is None
    assert memory.done("c", []).places == []  # "no places" is a result


def queue(**kwargs: int) -> ExtractionQueue:
    return ExtractionQueue(max_sentences=kwargs.get("n", 3), max_chars=kwargs.get("chars", 100))


def test_batches_respect_both_limits_and_typing_has_its_own_lane() -> None:
    q = queue(n=3, chars=30)
    for i in range(5):
        q.want(f"b{i}", f"Background {i}.", urgent=False, now=0)  # 14 chars each
    q.want("t", "Typed.", urgent=True, now=0)
    assert [i.key for i in q.take(0, urgent=True)] == ["t"]
    assert [i.key for i in q.take(0, urgent=False)] == ["b0", "b1"]  # 28 chars
    assert [i.key for i in q.take(0, urgent=False)] == ["b2", "b3"]
    assert q.take(0, urgent=True) == []  # nothing typed waits


def test_a_queued_sentence_typed_again_becomes_urgent() -> None:
    q = queue()
    q.want("k", "Again.", urgent=False, now=0)
    q.want("k", "Again.", urgent=True, now=0)
    assert len(q) == 1 and [i.key for i in q.take(0, urgent=True)] == ["k"]


def test_a_transient_failure_backs_off_respecting_retry_after() -> None:
    q = queue()
    q.want("k", "Oslo.", urgent=True, now=0)
    batch = q.take(0, urgent=True)
    assert q.failed(batch, Failure("HTTP 503", retry_after_s=60), now=0) == []
    assert q.take(59, urgent=True) == [] and q.next_due(urgent=True) == 60
    assert [i.key for i in q.take(60, urgent=True)] == ["k"]


def test_budget_refusals_are_not_attempts() -> None:
    q = queue()
    q.want("k", "Oslo.", urgent=True, now=0)
    for step in range(MAX_ATTEMPTS * 2):
        batch = q.take(step * 100, urgent=True)
        assert q.failed(batch, Failure("budget", retry_after_s=5, spent=False), step * 100) == []
    assert "k" in q


def test_a_refused_batch_is_split_and_only_a_refused_single_is_given_up() -> None:
    q = queue()
    for key in "abc":
        q.want(key, f"Sentence {key}.", urgent=True, now=0)
    batch = q.take(0, urgent=True)
    assert len(batch) == 3
    assert q.failed(batch, Failure("HTTP 400", rejected=True), now=0) == []
    singles = [q.take(0, urgent=True) for _ in range(3)]
    assert [len(s) for s in singles] == [1, 1, 1]
    given_up = q.failed(singles[1], Failure("HTTP 400", rejected=True), now=0)
    assert [i.key for i in given_up] == [singles[1][0].key] and len(q) == 2


def test_a_sentence_failing_too_often_is_given_up() -> None:
    q = queue()
    q.want("k", "Oslo.", urgent=True, now=0, attempts=MAX_ATTEMPTS - 1)
    batch = q.take(0, urgent=True)
    assert [i.key for i in q.failed(batch, Failure("timeout"), now=0)] == ["k"]
    assert len(q) == 0


@given(
    st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=60),
    st.integers(1, 10),
    st.integers(60, 300),
)
@settings(max_examples=60, deadline=None)
def test_every_batch_is_within_the_limits_and_every_sentence_goes_once(
    texts: list[str], n: int, chars: int
) -> None:
    q = ExtractionQueue(max_sentences=n, max_chars=chars)
    for i, text in enumerate(texts):
        q.want(str(i), text, urgent=i % 2 == 0, now=0)
    taken: list[str] = []
    for _ in range(len(texts) * 2):
        for urgent in (True, False):
            batch = q.take(0, urgent=urgent)
            assert len(batch) <= n
            assert len(batch) == 1 or sum(len(i.text) for i in batch) <= chars
            taken += [i.key for i in batch]
            q.done(i.key for i in batch)
    assert sorted(taken) == sorted(str(i) for i in range(len(texts)))
