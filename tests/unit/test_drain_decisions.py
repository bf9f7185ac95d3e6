"""Make-before-break drain, the pure part: the supervisor keeps its agents running
while other managers take their documents over, stops each one when it is fenced
(or its handover grace ends), and falls back to detaching at the drain's deadline
or when no other live manager has a free slot."""

from __future__ import annotations

from supervisor_support import Ev, make

from manager.supervise.supervisor import Action, Claim, EndLife, Phase, Spawn, Stop, Supervisor


def running(
    docs: list[str], *, peers: dict[str, int] | None = None, capacity: int = 4
) -> Supervisor:
    """A supervisor running a connected worker for each of ``docs``."""
    sup = make(capacity, 0, claim_retry_s=15)
    sup.load([Ev(doc, "active") for doc in docs], 0)
    for doc in docs:
        agent = sup.agent_id(doc)
        assert agent is not None
        sup.claimed(doc, agent, 0)
        sup.worker_connected(doc, agent, 0)
    assert sup.workers == len(docs)
    sup.fleet_changed({"m2": 5} if peers is None else peers, 0)
    return sup


def stopped(actions: list[Action]) -> list[tuple[str, str]]:
    return sorted((a.document_id, a.reason) for a in actions if isinstance(a, Stop))


def agent(sup: Supervisor, doc: str) -> str:
    found = sup.agent_id(doc)
    assert found is not None
    return found


def test_a_drain_with_room_elsewhere_keeps_every_agent_until_its_successor_connects() -> None:
    sup = running(["a", "b"])
    assert sup.drain(1) == []  # nothing stops: the others take the documents over
    assert sup.draining and sup.workers == 2
    assert sup.owned_elsewhere_documents() == []  # nothing to probe: it claims nothing
    assert sup.apply_events([Ev("c", "active")], 1.5) == []  # takes nothing new
    # Another manager claimed "a" (its row ended 'drained'); the audit sees it.
    a = agent(sup, "a")
    assert sup.rows_audited({a, agent(sup, "b")}, {agent(sup, "b")}, 2) == []
    assert sup.phase("a") is Phase.RUNNING  # no gap: it runs until fenced
    # The successor's worker connected: the docserver fenced the old one.
    assert stopped(sup.worker_activity("a", a, "fenced", 2.5)) == [("a", "drained")]
    after = sup.worker_exited("a", a, "exited with code 0", 3)
    assert [(e.document_id, e.reason) for e in after if isinstance(e, EndLife)] == [
        ("a", "drained")
    ]
    assert not [x for x in after if isinstance(x, Claim | Spawn)]
    # Fenced before the audit noticed: stopped at once, too.
    b = agent(sup, "b")
    assert stopped(sup.worker_activity("b", b, "fenced", 4)) == [("b", "drained")]


def test_without_fencing_a_handed_over_worker_stops_after_the_grace() -> None:
    sup = running(["a"])
    sup.drain(1)
    a = agent(sup, "a")
    assert sup.row_ended_elsewhere("a", a, 2) == []
    assert sup.next_deadline(2) == 2 + sup.handoff_grace_s
    assert sup.tick(6.9) == []
    assert stopped(sup.tick(7)) == [("a", "drained")]


def test_what_is_left_at_the_drain_deadline_detaches() -> None:
    sup = running(["a", "b"])
    sup.drain(1)
    assert sup.next_deadline(1) == 1 + sup.drain_timeout_s
    assert sup.tick(15.9) == []
    assert stopped(sup.tick(16)) == [("a", "drained"), ("b", "drained")]
    assert sup.next_deadline(16) is None  # only stopping workers left


def test_when_the_others_fill_up_what_is_left_detaches() -> None:
    sup = running(["a", "b"])
    sup.drain(1)
    fleet = sup.fleet_changed({"m2": 0, "m3": 0}, 2)
    assert stopped(fleet) == [("a", "drained"), ("b", "drained")]


def test_a_drain_with_only_full_peers_detaches_at_once() -> None:
    sup = running(["a"], peers={"m2": 0})
    assert stopped(sup.drain(1)) == [("a", "drained")]


def test_a_document_left_by_its_people_while_draining_detaches_as_idle() -> None:
    sup = running(["a", "b"])
    sup.drain(1)
    assert stopped(sup.apply_events([Ev("a", "idle", 0)], 2)) == [("a", "idle")]


def test_a_claim_in_flight_at_the_drain_never_evicts_its_victim() -> None:
    sup = make(1, 0)
    sup.load([Ev("old", "active")], 0)
    old = agent(sup, "old")
    sup.claimed("old", old, 0)
    sup.worker_connected("old", old, 0)
    claims = sup.apply_events([Ev("new", "active")], 1)  # evicts "old" once claimed
    assert [c.document_id for c in claims if isinstance(c, Claim)] == ["new"]
    sup.fleet_changed({"m2": 3}, 0)
    assert sup.drain(2) == []
    answered = sup.claimed("new", agent(sup, "new"), 3)
    assert stopped(answered) == []  # "old" keeps running for its successor
    assert [(e.document_id, e.reason) for e in answered if isinstance(e, EndLife)] == [
        ("new", "drained")
    ]
    assert sup.phase("old") is Phase.RUNNING


def test_a_stop_hands_over_first_only_with_workers_a_lease_and_room_elsewhere() -> None:
    assert running(["a"]).hands_over_at_shutdown()
    assert not running(["a"], peers={}).hands_over_at_shutdown()
    assert not running(["a"], peers={"m2": 0}).hands_over_at_shutdown()
    assert not running([]).hands_over_at_shutdown()
    lost = running(["a"])
    lost.lease_lost(1)
    assert not lost.hands_over_at_shutdown()
