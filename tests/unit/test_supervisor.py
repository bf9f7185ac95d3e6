"""The supervisor's decisions, driven by hand: no processes, no database."""

from __future__ import annotations

import ast
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from manager.supervise.supervisor import (
    Claim,
    EndLife,
    EndReason,
    Kill,
    Phase,
    RestartPolicy,
    Spawn,
    Stop,
    Supervisor,
    wanted_from_latest,
)


@dataclass(frozen=True)
class Ev:
    document_id: str
    event_type: str
    user_count: int = 1
    edit: bool = False


def make(capacity: int = 2, residency: float = 10.0, **policy: float) -> Supervisor:
    ids = itertools.count(1)
    return Supervisor(
        capacity,
        min_residency_s=residency,
        policy=RestartPolicy(**policy),  # type: ignore[arg-type]
        new_agent_id=lambda: f"a{next(ids)}",
        manager_id="m1",
    )


def starts(actions: list) -> list[str]:
    """Documents whose new life was claimed."""
    return [a.document_id for a in actions if isinstance(a, Claim)]


def stops(actions: list) -> list[tuple[str, str]]:
    return [(a.document_id, a.reason) for a in actions if isinstance(a, Stop)]


def spawns(actions: list) -> list[str]:
    return [a.document_id for a in actions if isinstance(a, Spawn)]


def claimed(sup: Supervisor, doc: str, now: float) -> list:
    """The store answers this document's pending claim: claimed."""
    agent = sup.agent_id(doc)
    assert agent is not None and sup.phase(doc) is Phase.CLAIMING
    return sup.claimed(doc, agent, now)


def drive(sup: Supervisor, actions: list, now: float) -> list:
    """Actions, with every Claim among them answered 'claimed' at once (and what follows)."""
    out = []
    for action in actions:
        out.append(action)
        if isinstance(action, Claim):
            out += drive(sup, sup.claimed(action.document_id, action.agent_id, now), now)
    return out


def run(sup: Supervisor, doc: str, now: float) -> str:
    agent = sup.agent_id(doc)
    assert agent is not None
    if sup.phase(doc) is Phase.CLAIMING:
        sup.claimed(doc, agent, now)
    sup.worker_connected(doc, agent, now)
    return agent


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


def test_crash_restart_backoff_and_reset_after_stable_minute() -> None:
    sup = make(backoff_min_s=1, backoff_max_s=60, stable_s=60, crash_loop_restarts=100)
    sup.apply_events([Ev("d", "active")], 0)
    now = 0.0
    delays = []
    for _ in range(8):
        agent = run(sup, "d", now)
        actions = sup.worker_exited("d", agent, "killed by SIGKILL", now)
        assert actions == [EndLife("d", agent, "disconnected", "crashed: killed by SIGKILL")]
        deadline = sup.next_deadline(now)
        assert deadline is not None
        delays.append(deadline - now)
        assert sup.tick(deadline - 0.001) == []
        now = deadline
        action = sup.tick(now)[0]
        assert isinstance(action, Claim)
        assert action.supersedes == actions[0]  # the end may still sit in the writer
        (spawn,) = claimed(sup, "d", now)
        assert isinstance(spawn, Spawn) and spawn.restart
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
        agent = run(sup, "d", now)
        ends += [
            a
            for a in sup.worker_exited("d", agent, "exited with code 1", now)
            if isinstance(a, EndLife)
        ]
        now += 0.1
        sup.tick(now)
    assert [e.status for e in ends] == ["disconnected"] * 5 + ["error"]
    assert [e.code for e in ends] == ["crashed"] * 5 + ["crash_loop"]
    assert "exited with code 1" in ends[-1].reason
    assert sup.blocked("d") == "crash_loop"
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
        EndLife("d", agent, "disconnected", "crashed: no pong within 5 s")
    ]
    assert starts(sup.tick(2.1)) == ["d"]


def test_worker_error_message_is_kept_for_the_exit_reason() -> None:
    sup = make()
    sup.apply_events([Ev("d", "active")], 0)
    agent = run(sup, "d", 0)
    sup.worker_error("d", agent, "websocket refused")
    (end,) = sup.worker_exited("d", agent, "exited with code 1", 1)
    assert isinstance(end, EndLife)
    assert end.reason == "crashed: exited with code 1; last error: websocket refused"


def test_claim_refused_retries_later_and_frees_the_slot() -> None:
    sup = make(capacity=1, claim_retry_s=15)
    sup.apply_events([Ev("a", "active"), Ev("b", "active")], 0)
    agent = sup.agent_id("b")  # b is more recent: it got the slot
    assert agent is not None
    refused = sup.claim_refused("b", agent, owner_manager_id="m2", owner_agent_id="x", now=0.1)
    assert starts(refused) == ["a"]
    assert sup.phase("b") is Phase.OWNED_ELSEWHERE
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


def test_lost_claim_answer_is_retried_with_the_same_agent_id() -> None:
    """#9: the row may exist; the retry claims the same life (idempotent in SQL)."""
    sup = make(capacity=1, claim_retry_s=15)
    (claim,) = sup.apply_events([Ev("d", "active")], 0)
    assert isinstance(claim, Claim)
    assert sup.claim_unanswered("d", claim.agent_id, "connection lost", 0.5) == []
    assert sup.phase("d") is Phase.NO_WORKER and sup.waiting == 1
    assert sup.next_deadline(0.6) == 1.5  # 1 s, doubling up to claim_retry_s
    (again,) = sup.tick(1.5)
    assert isinstance(again, Claim) and again.agent_id == claim.agent_id
    assert sup.claim_unanswered("d", claim.agent_id, "connection lost", 2) == []
    assert sup.next_deadline(2) == 4
    (third,) = sup.tick(4)
    assert sup.claimed("d", third.agent_id, 4.1) == [Spawn("d", claim.agent_id)]


def test_lost_claim_of_an_unwanted_document_is_ended() -> None:
    """A lost claim may have left a 'connecting' row: when nobody wants the document
    any more, that life is ended (a no-op in SQL if the row never existed)."""
    sup = make()
    (claim,) = sup.apply_events([Ev("d", "active")], 0)
    sup.claim_unanswered("d", claim.agent_id, "connection lost", 0.1)
    actions = sup.apply_events([Ev("d", "idle", 0)], 0.2)
    assert actions == [EndLife("d", claim.agent_id, "disconnected", "idle")]
    assert sup.tracked() == 0


def test_stop_before_start_ends_the_life_when_the_claim_answers() -> None:
    """The decision lives.py used to take: the document left while its claim was in flight."""
    sup = make()
    (claim,) = sup.apply_events([Ev("d", "active")], 0)
    assert sup.apply_events([Ev("d", "idle", 0)], 0.01) == []  # no process to stop yet
    assert sup.claimed("d", claim.agent_id, 0.02) == [
        EndLife("d", claim.agent_id, "disconnected", "idle")
    ]
    assert sup.tracked() == 0 and sup.lives == 0


def test_next_claim_supersedes_the_previous_life_of_this_manager() -> None:
    """The end of the previous life may still sit in the writer's buffer: the claim
    carries it, so the database ends that row with the same reason in one statement."""
    sup = make()
    drive(sup, sup.apply_events([Ev("d", "active")], 0), 0)
    agent = run(sup, "d", 0)
    sup.apply_events([Ev("d", "idle", 0)], 1)
    (end,) = sup.worker_exited("d", agent, "exited with code 0", 1.1)
    (claim,) = sup.apply_events([Ev("d", "active")], 1.2)
    assert isinstance(claim, Claim) and claim.supersedes == end
    assert end == EndLife("d", agent, "disconnected", "idle")


def test_return_while_stopping_gets_a_new_life_at_the_exit() -> None:
    """#4: back just after the grace: the old worker is leaving; the new life starts
    the moment it is gone (no 'active' is lost, nothing is blocked)."""
    sup = make()
    drive(sup, sup.apply_events([Ev("d", "active")], 0), 0)
    agent = run(sup, "d", 0)
    assert stops(sup.apply_events([Ev("d", "idle", 0)], 30)) == [("d", "idle")]
    assert sup.apply_events([Ev("d", "active")], 30.1) == []  # still stopping
    actions = sup.worker_exited("d", agent, "exited with code 0", 30.3)
    assert actions[0] == EndLife("d", agent, "disconnected", "idle")
    assert starts(actions) == ["d"]


def test_a_stale_live_row_of_this_manager_is_superseded_once() -> None:
    sup = make(claim_retry_s=15)
    (claim,) = sup.apply_events([Ev("d", "active")], 0)
    actions = sup.claim_refused(
        "d", claim.agent_id, owner_manager_id="m1", owner_agent_id="ghost", now=0.1
    )
    (retry,) = actions
    assert isinstance(retry, Claim) and retry.supersedes is not None
    assert retry.supersedes.agent_id == "ghost"
    assert retry.supersedes.code == "manager_restarted"
    # Refused by the same ghost again (not ours after all): owned elsewhere, no loop.
    assert (
        sup.claim_refused(
            "d", retry.agent_id, owner_manager_id="m1", owner_agent_id="ghost", now=0.2
        )
        == []
    )
    assert sup.phase("d") is Phase.OWNED_ELSEWHERE


def test_a_claim_answered_with_its_own_ended_row_starts_a_new_life() -> None:
    sup = make()
    (claim,) = sup.apply_events([Ev("d", "active")], 0)
    sup.claim_unanswered("d", claim.agent_id, "lost", 0.1)
    (again,) = sup.tick(1.1)
    (fresh,) = sup.claim_refused(
        "d", again.agent_id, owner_manager_id="m1", owner_agent_id=again.agent_id, now=1.2
    )
    assert isinstance(fresh, Claim) and fresh.agent_id != claim.agent_id


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


def test_an_edit_row_does_not_lift_a_crash_loop() -> None:
    sup = make(backoff_min_s=0, backoff_max_s=0, crash_loop_restarts=0)
    drive(sup, sup.apply_events([Ev("d", "active")], 0), 0)
    agent = run(sup, "d", 0)
    (end,) = sup.worker_exited("d", agent, "exited with code 1", 1)
    assert end.status == "error" and sup.blocked("d") == "crash_loop"
    assert sup.apply_events([Ev("d", "active", edit=True)], 2) == []
    assert starts(sup.apply_events([Ev("d", "active")], 3)) == ["d"]


def test_a_row_ended_elsewhere_stops_the_worker_as_owned_elsewhere() -> None:
    sup = make(claim_retry_s=15)
    drive(sup, sup.apply_events([Ev("d", "active")], 0), 0)
    agent = run(sup, "d", 0)
    assert stops(sup.row_ended_elsewhere("d", agent, 5)) == [("d", "owned_elsewhere")]
    (end,) = sup.worker_exited("d", agent, "exited with code 0", 5.2)
    assert end == EndLife("d", agent, "disconnected", "owned_elsewhere")
    assert sup.next_deadline(5.3) == 20  # tried again after claim_retry_s


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


def test_a_fenced_worker_ends_its_life_as_owned_elsewhere() -> None:
    """The docserver retired the worker (a newer life holds the document): no crash,
    no restart backoff; the document is tried again after CLAIM_RETRY_S."""
    sup = make(claim_retry_s=15)
    drive(sup, sup.apply_events([Ev("d", "active")], 0), 0)
    agent = run(sup, "d", 0)
    assert stops(sup.worker_activity("d", agent, "fenced", 5)) == [("d", "owned_elsewhere")]
    (end,) = sup.worker_exited("d", agent, "exited with code 0", 5.1)
    assert end == EndLife("d", agent, "disconnected", "owned_elsewhere")
    assert sup.restarts == 0 and sup.next_deadline(5.2) == 20


#: The decision core: each module imports only the standard library and these.
CORE = ("actions", "documents", "policy", "life_reports", "supervisor")
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
