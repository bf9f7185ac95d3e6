import pytest

from worker.awareness import is_human
from worker.backoff import Backoff
from worker.trigger import Debouncer


def test_debouncer_waits_for_quiet_but_not_longer_than_max_wait() -> None:
    d = Debouncer(debounce_s=0.3, max_wait_s=2.0)
    assert d.due_at() is None
    d.touch(10.0)
    assert d.due_at() == pytest.approx(10.3)
    d.touch(10.2)
    assert d.due_at() == pytest.approx(10.5)
    for t in (10.4, 10.6, 10.8, 11.0, 11.2, 11.4, 11.6, 11.8):
        d.touch(t)
    assert d.due_at() == pytest.approx(12.0)
    d.take()
    assert not d.pending and d.due_at() is None


def test_backoff_grows_with_jitter_between_one_and_thirty_seconds() -> None:
    b = Backoff()
    delays = [b.next_delay() for _ in range(12)]
    assert all(1.0 <= d <= 30.0 for d in delays)
    assert delays[0] == 1.0
    assert max(delays[-4:]) >= 15.0
    b.reset()
    assert b.next_delay() == 1.0


def test_humans_are_non_empty_non_agent_states() -> None:
    assert is_human({"user": {"name": "Ann"}})
    assert is_human({"cursor": {"anchor": 1}})
    assert not is_human({})
    assert not is_human(None)
    assert not is_human({"user": {"name": "AI Agent"}, "type": "agent"})


def test_a_typed_terminator_makes_the_batch_due_early() -> None:
    d = Debouncer(debounce_s=0.3, max_wait_s=2.0, sentence_end_s=0.0)
    d.touch(10.0)
    assert d.due_at() == pytest.approx(10.3)
    d.sentence_ended(10.1)
    d.touch(10.1)
    assert d.due_at() == pytest.approx(10.1)
    d.touch(10.15)  # keystrokes after the '.' do not postpone it
    assert d.due_at() == pytest.approx(10.1)
    d.take()
    d.touch(11.0)
    assert d.due_at() == pytest.approx(11.3)  # the shortcut is per batch


def test_without_a_sentence_end_delay_terminators_are_ordinary_touches() -> None:
    d = Debouncer(debounce_s=0.3, max_wait_s=2.0)
    d.sentence_ended(10.0)
    d.touch(10.0)
    assert d.due_at() == pytest.approx(10.3)
