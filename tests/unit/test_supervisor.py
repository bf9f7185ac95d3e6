"""The supervisor's decisions, driven by hand: no processes, no database."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from manager.supervisor import (
    EndLife,
    Kill,
    Phase,
    RestartPolicy,
    Start,
    Stop,
    Supervisor,
    wanted_from_latest,
)


@dataclass(frozen=True)
class Ev:
    document_id: str
    event_type: str
    user_count: int = 1


def make(capacity: int = 2, residency: float = 10.0, **policy: float) -> Supervisor:
    ids = itertools.count(1)
    return Supervisor(
        capacity,
        min_residency_s=residency,
        policy=RestartPolicy(**policy),  # type: ignore[arg-type]
        new_agent_id=lambda: f"a{next(ids)}",
    )


def starts(actions: list) -> list[str]:
    return [a.document_id for a in actions if isinstance(a, Start)]


def stops(actions: list) -> list[tuple[str, str]]:
    return [(a.document_id, a.reason) for a in actions if isinstance(a, Stop)]


def run(sup: Supervisor, doc: str, now: float) -> str:
    agent = sup.agent_id(doc)
    assert agent is not None
    sup.worker_connected(doc, agent, now)
    return agent


def test_active_starts_idle_stops_and_end_life_follows_exit() -> None:
    sup = make()
    actions = sup.apply_events([Ev("d", "active")], now=0)
    assert actions == [Start("d", "a1")]
    assert sup.phase("d") is Phase.STARTING
    run(sup, "d", 0.1)
    assert sup.apply_events([Ev("d", "idle", 0)], now=1) == [Stop("d", "a1", "idle")]
    assert sup.worker_exited("d", "a1", "exited with code 0", now=2) == [
        EndLife("d", "a1", "disconnected", "idle")
    ]
    assert sup.tracked() == 0  # nothing remembered for an unwanted document


def test_storm_in_one_batch_is_coalesced() -> None:
    sup = make()
    storm = [Ev("d", t) for t in ["active", "idle"] * 500] + [Ev("d", "active")]
    assert starts(sup.apply_events(storm, now=0)) == ["d"]
    storm = [Ev("d", t) for t in ["idle", "active"] * 500]
    assert sup.apply_events(storm, now=1) == []
    assert sup.events_applied == 2001


def test_user_events_keep_wanted_and_recency() -> None:
    sup = make(capacity=1, residency=0)
    sup.apply_events([Ev("a", "active"), Ev("a", "user_left", 1), Ev("b", "user_left", 0)], 0)
    assert sup.tracked() == 1  # user_left of an unknown document holds no state
    assert wanted_from_latest(Ev("x", "user_joined"))
    assert wanted_from_latest(Ev("x", "user_left", 2))
    assert not wanted_from_latest(Ev("x", "user_left", 0))
    assert not wanted_from_latest(Ev("x", "idle", 0))


def test_cap_lru_eviction_and_queue() -> None:
    sup = make(capacity=2, residency=10)
    assert starts(sup.apply_events([Ev("a", "active"), Ev("b", "active")], now=0)) == ["b", "a"]
    agent_a = run(sup, "a", 0)
    agent_b = run(sup, "b", 0)
    # Young agents are not evicted: c waits.
    assert sup.apply_events([Ev("c", "active")], now=1) == []
    assert sup.waiting == 1
    assert sup.next_deadline(1) == 10
    # Once residency has passed, the least recent (a) makes room for c.
    assert stops(sup.tick(now=10)) == [("a", "evicted")]
    assert sup.evictions == 1
    assert sup.running == 2  # a still counts until its process is gone
    actions = sup.worker_exited("a", agent_a, "exited with code 0", now=10.5)
    assert actions[0] == EndLife("a", agent_a, "disconnected", "evicted")
    assert starts(actions) == ["c"]
    assert sup.is_wanted("a") and sup.waiting == 1
    # b leaves: the freed slot goes to the waiting a.
    assert stops(sup.apply_events([Ev("b", "idle", 0)], now=11)) == [("b", "idle")]
    assert starts(sup.worker_exited("b", agent_b, "exited with code 0", now=11.1)) == ["a"]


def test_freed_slot_goes_to_most_recent_waiting_document() -> None:
    sup = make(capacity=1, residency=1000)
    sup.apply_events([Ev("a", "active")], 0)
    run(sup, "a", 0)
    sup.apply_events(
        [Ev("x", "active"), Ev("y", "active"), Ev("z", "active"), Ev("x", "user_joined")], 1
    )
    sup.apply_events([Ev("a", "idle", 0)], 2)
    assert starts(sup.worker_exited("a", "a1", "exited with code 0", 3)) == ["x"]


def test_no_thrash_under_alternating_activity() -> None:
    sup = make(capacity=2, residency=5)
    sup.apply_events([Ev("a", "active"), Ev("b", "active")], 0)
    run(sup, "a", 0)
    run(sup, "b", 0)
    sup.apply_events([Ev("c", "active")], 0.5)  # c waits (residency)
    # a and b are busy (worker edit reports); c stays the least recent.
    evictions = 0
    for i in range(200):
        now = 1 + i * 0.5
        doc = "ab"[i % 2]
        sup.worker_activity(doc, sup.agent_id(doc) or "", "edit", now)
        evictions += len(stops(sup.tick(now)))
    assert evictions == 0
    assert sup.phase("a") is Phase.RUNNING and sup.phase("b") is Phase.RUNNING
    # Alternating *events* among three documents: each agent lives at least the residency.
    sup2 = make(capacity=2, residency=5)
    docs = ["a", "b", "c"]
    lives: dict[str, float] = {}
    shortest = float("inf")
    pending: list[tuple[str, str]] = []
    for i in range(300):
        now = i * 0.25
        for doc, agent in pending:
            for action in sup2.worker_exited(doc, agent, "exited with code 0", now):
                if isinstance(action, Start):
                    lives[action.document_id] = now
        pending = []
        for action in sup2.apply_events([Ev(docs[i % 3], "active")], now):
            if isinstance(action, Start):
                lives[action.document_id] = now
            if isinstance(action, Stop):
                shortest = min(shortest, now - lives[action.document_id])
                pending.append((action.document_id, action.agent_id))
        assert sup2.running <= 2
    assert shortest >= 5


def test_abandoned_detaches_until_next_active() -> None:
    sup = make()
    sup.apply_events([Ev("d", "active")], 0)
    agent = run(sup, "d", 0)
    assert stops(sup.worker_activity("d", agent, "abandoned", 1)) == [("d", "abandoned")]
    assert sup.worker_exited("d", agent, "exited with code 0", 2) == [
        EndLife("d", agent, "disconnected", "abandoned")
    ]
    assert sup.tick(100) == []
    assert sup.apply_events([Ev("d", "user_joined")], 101) == []  # still blocked
    assert starts(sup.apply_events([Ev("d", "active")], 102)) == ["d"]


def test_crash_restart_backoff_and_reset_after_stable_minute() -> None:
    sup = make(backoff_min_s=1, backoff_max_s=60, stable_s=60, crash_loop_restarts=100)
    sup.apply_events([Ev("d", "active")], 0)
    now = 0.0
    delays = []
    for _ in range(8):
        agent = run(sup, "d", now)
        actions = sup.worker_exited("d", agent, "killed by SIGKILL", now)
        assert actions == [EndLife("d", agent, "disconnected", "killed by SIGKILL")]
        deadline = sup.next_deadline(now)
        assert deadline is not None
        delays.append(deadline - now)
        assert sup.tick(deadline - 0.001) == []
        now = deadline
        action = sup.tick(now)[0]
        assert isinstance(action, Start) and action.restart
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert sup.restarts == 8
    # Up for a stable minute: the backoff starts again from the minimum.
    agent = run(sup, "d", now)
    sup.worker_exited("d", agent, "killed by SIGKILL", now + 61)
    assert sup.next_deadline(now + 61) == now + 62


def test_crash_loop_sets_error_and_waits_for_active() -> None:
    sup = make(backoff_min_s=0.1, backoff_max_s=0.1, crash_loop_restarts=5, crash_loop_window_s=300)
    sup.apply_events([Ev("d", "active")], 0)
    now = 0.0
    ends = []
    for _ in range(6):
        agent = sup.agent_id("d")
        assert agent is not None
        ends += [
            a
            for a in sup.worker_exited("d", agent, "exited with code 1", now)
            if isinstance(a, EndLife)
        ]
        now += 0.1
        sup.tick(now)
    assert [e.status for e in ends] == ["disconnected"] * 5 + ["error"]
    assert "crash loop" in ends[-1].reason and "exited with code 1" in ends[-1].reason
    assert sup.blocked("d") == "error"
    assert sup.tick(now + 1000) == []
    assert sup.restarts == 5
    # The next 'active' event clears the block and the crash history.
    assert starts(sup.apply_events([Ev("d", "active")], now + 1001)) == ["d"]


def test_unhealthy_kill_then_exit_is_a_crash_with_that_reason() -> None:
    sup = make(backoff_min_s=1)
    sup.apply_events([Ev("d", "active")], 0)
    agent = run(sup, "d", 0)
    assert sup.worker_unhealthy("d", agent, "no pong within 5 s", 1) == [
        Kill("d", agent, "no pong within 5 s")
    ]
    assert sup.worker_unhealthy("d", agent, "again", 1) == []
    assert sup.worker_exited("d", agent, "killed by SIGKILL", 1.1) == [
        EndLife("d", agent, "disconnected", "no pong within 5 s")
    ]
    assert starts(sup.tick(2.1)) == ["d"]


def test_worker_error_message_is_kept_for_the_exit_reason() -> None:
    sup = make()
    sup.apply_events([Ev("d", "active")], 0)
    agent = run(sup, "d", 0)
    sup.worker_error("d", agent, "websocket refused")
    (end,) = sup.worker_exited("d", agent, "exited with code 1", 1)
    assert isinstance(end, EndLife)
    assert end.reason == "exited with code 1; last error: websocket refused"


def test_claim_failed_retries_later_and_frees_the_slot() -> None:
    sup = make(capacity=1, claim_retry_s=15)
    sup.apply_events([Ev("a", "active"), Ev("b", "active")], 0)
    agent = sup.agent_id("b")  # b is more recent: it got the slot
    assert agent is not None
    assert starts(sup.claim_failed("b", agent, "owned by manager m2", 0.1)) == ["a"]
    assert sup.phase("b") is Phase.IDLE
    assert sup.next_deadline(0.2) is None or sup.next_deadline(0.2) == 15.1


def test_stale_reports_of_an_earlier_life_are_ignored() -> None:
    sup = make()
    sup.apply_events([Ev("d", "active")], 0)
    agent = run(sup, "d", 0)
    assert sup.worker_exited("d", "old-agent", "exited with code 1", 1) == []
    assert sup.worker_unhealthy("d", "old-agent", "x", 1) == []
    assert sup.phase("d") is Phase.RUNNING and sup.agent_id("d") == agent


def test_shutdown_stops_everything_and_starts_nothing() -> None:
    sup = make(capacity=3)
    sup.apply_events([Ev("a", "active"), Ev("b", "active")], 0)
    agent_a = run(sup, "a", 0)
    agent_b = sup.agent_id("b") or ""
    actions = sup.shutdown()
    assert sorted(stops(actions)) == [("a", "manager shutdown"), ("b", "manager shutdown")]
    assert sup.apply_events([Ev("c", "active")], 1) == []
    assert sup.worker_exited("a", agent_a, "exited with code 0", 1) == [
        EndLife("a", agent_a, "disconnected", "manager shutdown")
    ]
    sup.worker_exited("b", agent_b, "exited with code 0", 1)
    assert sup.idle


def test_load_attaches_most_recent_first_up_to_capacity() -> None:
    sup = make(capacity=2)
    latest = [
        Ev("old", "active"),
        Ev("gone", "idle", 0),
        Ev("mid", "user_joined"),
        Ev("new", "active"),
    ]
    assert starts(sup.load(latest, 0)) == ["new", "mid"]
    assert sup.waiting == 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        make(capacity=0)
