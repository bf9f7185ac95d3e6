"""The supervisor's manager-wide decisions, driven by hand: no processes, no database.

Activity, slots and eviction, shutdown, start-up; the answers about one life are
``test_life_reports.py``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from supervisor_support import Ev, claimed, drive, make, run, spawns, starts, stops

from manager.supervise.supervisor import (
    Claim,
    EndLife,
    EndReason,
    Phase,
    Spawn,
    Stop,
    wanted_from_latest,
)


def test_active_starts_idle_stops_and_end_life_follows_exit() -> None:
    sup = make()
    actions = sup.apply_events([Ev("d", "active")], now=0)
    assert actions == [Claim("d", "a1")]
    assert sup.phase("d") is Phase.CLAIMING
    assert sup.claimed("d", "a1", 0.05) == [Spawn("d", "a1")]
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
    # Once residency has passed, the least recent (a) makes room for c: c is
    # claimed first, and a is stopped once the claim succeeded.
    assert starts(sup.tick(now=10)) == ["c"]
    assert sup.evictions == 0 and sup.phase("a") is Phase.RUNNING
    assert stops(claimed(sup, "c", 10)) == [("a", "evicted")]
    assert sup.evictions == 1
    assert sup.workers == 2  # a still counts until its process is gone
    assert sup.phase("c") is Phase.CLAIMED
    actions = sup.worker_exited("a", agent_a, "exited with code 0", now=10.5)
    assert actions[0] == EndLife("a", agent_a, "disconnected", "evicted")
    assert spawns(actions) == ["c"]
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
            exited = sup2.worker_exited(doc, agent, "exited with code 0", now)
            for action in drive(sup2, exited, now):
                if isinstance(action, Claim):
                    lives[action.document_id] = now
        pending = []
        for action in drive(sup2, sup2.apply_events([Ev(docs[i % 3], "active")], now), now):
            if isinstance(action, Claim):
                lives[action.document_id] = now
            if isinstance(action, Stop):
                shortest = min(shortest, now - lives[action.document_id])
                pending.append((action.document_id, action.agent_id))
        assert sup2.workers <= 2
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


def test_shutdown_stops_everything_and_starts_nothing() -> None:
    sup = make(capacity=3)
    sup.apply_events([Ev("a", "active"), Ev("b", "active")], 0)
    agent_a = run(sup, "a", 0)
    agent_b = sup.agent_id("b") or ""
    actions = sup.shutdown()
    assert stops(actions) == [("a", "manager_shutdown")]  # b's claim is still in flight
    assert sup.apply_events([Ev("c", "active")], 1) == []
    assert sup.worker_exited("a", agent_a, "exited with code 0", 1) == [
        EndLife("a", agent_a, "disconnected", "manager_shutdown")
    ]
    assert sup.lives > 0
    assert sup.claimed("b", agent_b, 1) == [
        EndLife("b", agent_b, "disconnected", "manager_shutdown")
    ]
    assert sup.lives == 0


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


# --- issue 14: the life cycle's edges -----------------------------------------------


def test_owned_elsewhere_never_evicts_and_takes_only_a_free_slot() -> None:
    """#6: a document another manager holds does not evict a local agent, ever."""
    sup2 = make(capacity=1, residency=0, claim_retry_s=15)
    drive(sup2, sup2.apply_events([Ev("mine", "active")], 0), 0)
    run(sup2, "mine", 0)
    # 'theirs' is more recent: its claim goes first, 'mine' is not touched yet ...
    (claim2,) = sup2.apply_events([Ev("theirs", "active")], 1)
    assert isinstance(claim2, Claim) and sup2.phase("mine") is Phase.RUNNING
    # ... and the claim is refused: 'mine' keeps its agent.
    assert (
        sup2.claim_refused(
            "theirs", claim2.agent_id, owner_manager_id="m2", owner_agent_id="x", now=1
        )
        == []
    )
    assert sup2.phase("mine") is Phase.RUNNING
    evictions = []
    for second in range(2, 3600):
        evictions += stops(sup2.tick(second))
        sup2.worker_activity("mine", sup2.agent_id("mine") or "", "edit", second)
        sup2.apply_events([Ev("theirs", "active", edit=True)], second)  # people type there
    assert evictions == []
    assert sup2.evictions == 0
    assert sup2.phase("theirs") is Phase.OWNED_ELSEWHERE and sup2.waiting == 1
    # A slot frees up: 'theirs' is tried again in it.
    sup2.apply_events([Ev("mine", "idle", 0)], 3600)
    agent = sup2.agent_id("mine") or ""
    assert starts(sup2.worker_exited("mine", agent, "exited with code 0", 3601)) == ["theirs"]


def test_people_typing_in_a_waiting_document_make_it_most_recent() -> None:
    """#7: the docserver's 'edit' rows raise a waiting document's recency, so it is
    served before documents where nobody typed (residency still holds)."""
    sup = make(capacity=2, residency=10)
    drive(sup, sup.apply_events([Ev("a", "active"), Ev("b", "active")], 0), 0)
    run(sup, "a", 0)
    run(sup, "b", 0)
    agent_a = sup.agent_id("a") or ""
    actions = drive(sup, sup.apply_events([Ev("c", "active")], 20), 20)  # evicts a
    assert stops(actions) == [("a", "evicted")]
    assert spawns(sup.worker_exited("a", agent_a, "exited", 20.5)) == ["c"]
    run(sup, "c", 20.5)
    # Nobody types in b or c for a minute; people type in the waiting a.
    actions = drive(sup, sup.apply_events([Ev("a", "active", edit=True)], 80), 80)
    assert stops(actions) == [("b", "evicted")]


def test_every_end_reason_is_a_code() -> None:
    assert {r.value for r in EndReason} == {
        "idle",
        "evicted",
        "crashed",
        "crash_loop",
        "manager_shutdown",
        "manager_restarted",
        "owned_elsewhere",
        "abandoned",
        "manager_lease_expired",
        "drained",
    }


#: The decision core: each module imports only the standard library and these.
CORE = ("actions", "documents", "policy", "life_reports", "drain", "supervisor")
#: Standard modules that would bring I/O, a clock or concurrency into it.
NOT_IN_CORE = {"asyncio", "logging", "os", "socket", "subprocess", "threading", "time"}


@pytest.mark.parametrize("module", CORE)
def test_the_decision_core_imports_only_itself_and_the_standard_library(module: str) -> None:
    """Sans-IO (STYLE.md): no store, no processes, no logging, no clock of its own."""
    package = Path(__file__).resolve().parents[2] / "manager" / "supervise"
    tree = ast.parse((package / f"{module}.py").read_text())
    allowed = {f"manager.supervise.{name}" for name in CORE}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".", 1)[0]
            assert name in allowed or (top in sys.stdlib_module_names and top not in NOT_IN_CORE), (
                f"{module} imports {name}"
            )
