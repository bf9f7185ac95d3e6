"""The presence state machine: events in, actions out (no I/O, no clock)."""

from __future__ import annotations

from docserver.presence import PresenceTracker, Record, StartGrace


def test_first_human_active_second_nothing() -> None:
    tracker = PresenceTracker(grace_s=30)
    assert tracker.human_joined("d") == [Record("d", "active", 1)]
    assert tracker.human_joined("d") == []
    assert tracker.humans("d") == 2


def test_last_human_leaves_then_grace_then_idle() -> None:
    tracker = PresenceTracker(grace_s=30)
    tracker.human_joined("d")
    tracker.human_joined("d")
    assert tracker.human_left("d") == []
    [grace] = tracker.human_left("d")
    assert isinstance(grace, StartGrace)
    assert grace.delay_s == 30
    assert tracker.grace_expired("d", grace.generation) == [Record("d", "idle", 0)]
    assert tracker.tracked() == set()
    # and the next visit is a new 'active'
    assert tracker.human_joined("d") == [Record("d", "active", 1)]


def test_rejoin_within_grace_cancels_idle_and_writes_nothing() -> None:
    tracker = PresenceTracker(grace_s=30)
    tracker.human_joined("d")
    [grace] = tracker.human_left("d")
    assert tracker.human_joined("d") == []
    assert tracker.grace_expired("d", grace.generation) == []
    # leaving again starts a fresh grace; only that one counts
    [second] = tracker.human_left("d")
    assert second.generation != grace.generation
    assert tracker.grace_expired("d", grace.generation) == []
    assert tracker.grace_expired("d", second.generation) == [Record("d", "idle", 0)]


def test_leave_without_join_is_ignored() -> None:
    tracker = PresenceTracker(grace_s=1)
    assert tracker.human_left("never") == []
    assert tracker.grace_expired("never", 1) == []


def test_documents_are_independent() -> None:
    tracker = PresenceTracker(grace_s=1)
    tracker.human_joined("a")
    tracker.human_joined("b")
    [grace_a] = tracker.human_left("a")
    assert tracker.humans("b") == 1
    assert tracker.grace_expired("a", grace_a.generation) == [Record("a", "idle", 0)]
    assert tracker.tracked() == {"b"}


def test_join_and_leave_rows_when_enabled() -> None:
    tracker = PresenceTracker(grace_s=1, record_joins=True)
    assert tracker.human_joined("d") == [Record("d", "active", 1), Record("d", "user_joined", 1)]
    assert tracker.human_joined("d") == [Record("d", "user_joined", 2)]
    assert tracker.human_left("d") == [Record("d", "user_left", 1)]
    left = tracker.human_left("d")
    assert left[0] == Record("d", "user_left", 0)
    assert isinstance(left[1], StartGrace)


def test_active_at_start_goes_idle_after_grace_unless_someone_comes() -> None:
    tracker = PresenceTracker(grace_s=5)
    actions = tracker.recovered_active(["stale", "visited"])
    graces = {a.document_id: a for a in actions if isinstance(a, StartGrace)}
    assert set(graces) == {"stale", "visited"}
    # someone opens "visited" within the grace: no new 'active' (the row still says so)
    assert tracker.human_joined("visited") == []
    assert tracker.grace_expired("visited", graces["visited"].generation) == []
    assert tracker.grace_expired("stale", graces["stale"].generation) == [
        Record("stale", "idle", 0)
    ]


def test_active_at_start_ignores_documents_already_joined() -> None:
    tracker = PresenceTracker(grace_s=5)
    tracker.human_joined("d")
    assert tracker.recovered_active(["d"]) == []
    assert tracker.humans("d") == 1


def test_edits_without_an_agent_write_rate_limited_edit_rows() -> None:
    """Issue 14 #7: people typing in a document with no agent connected are news for
    the manager (recency); with an agent there they are not (it reports edits)."""
    tracker = PresenceTracker(grace_s=30, edit_interval_s=10)
    tracker.human_joined("d", now=0)
    assert tracker.human_edited("d", 1) == []  # the join row itself is that signal
    assert tracker.human_edited("d", 10) == [Record("d", "active", 1, reason="edit")]
    assert tracker.human_edited("d", 15) == []
    assert tracker.human_edited("d", 20) == [Record("d", "active", 1, reason="edit")]
    tracker.agent_joined("d")
    assert tracker.agents("d") == 1
    assert tracker.human_edited("d", 40) == []
    tracker.agent_left("d")
    assert tracker.human_edited("d", 41) == [Record("d", "active", 1, reason="edit")]
    assert tracker.human_edited("unknown", 41) == []  # nobody counted there


def test_agents_never_make_a_document_active() -> None:
    tracker = PresenceTracker(grace_s=30)
    tracker.agent_joined("d")
    tracker.agent_joined("d")
    assert tracker.tracked() == set() and tracker.humans("d") == 0
    tracker.agent_left("d")
    tracker.agent_left("d")
    tracker.agent_left("d")  # an extra leave never goes negative
    assert tracker.agents("d") == 0
