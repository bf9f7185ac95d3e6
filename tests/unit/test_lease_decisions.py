"""Leases, the pure part: the lease clock, the verdict on another holder, and the
supervisor's lease inputs (no claims without a lease, the owned-elsewhere probe)."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from manager.fleet.leases import (
    HolderVerdict,
    LeaseClock,
    ManagerAlreadyRunning,
    free_slots,
    judge_holder,
    lease_agents,
    next_peer_expiry,
    placement_slots,
)
from manager.store.base import ManagerLease
from manager.supervise.supervisor import (
    Claim,
    EndLife,
    Phase,
    RestartPolicy,
    Spawn,
    Stop,
    Supervisor,
)


@dataclass(frozen=True)
class Ev:
    document_id: str
    event_type: str
    user_count: int = 1
    edit: bool = False


def holder(host: str = "h1", pid: int | None = 4242) -> ManagerLease:
    now = datetime.now(UTC)
    return ManagerLease(
        manager_id="m1",
        instance_id=uuid.uuid4(),
        host=host,
        pid=pid,
        started_at=now,
        renewed_at=now,
        expires_at=now,
        capacity=10,
        agents=3,
        state="leading",
    )


def make(capacity: int = 2, **kwargs: bool) -> Supervisor:
    ids = itertools.count(1)
    return Supervisor(
        capacity,
        min_residency_s=0,
        policy=RestartPolicy(claim_retry_s=15),
        new_agent_id=lambda: f"a{next(ids)}",
        manager_id="m1",
        **kwargs,
    )


def test_clock_holds_until_the_margin_before_ttl_after_the_send() -> None:
    clock = LeaseClock(ttl_s=10, renew_s=2)
    assert not clock.holds(0)
    clock.renewed(sent_at=100)
    assert clock.margin_s == 1
    assert clock.holds(108.9)
    assert not clock.holds(109)
    clock.renewed(sent_at=95)  # a late answer to an older renewal never shortens it
    assert clock.step_down_at() == 109
    clock.renewed(sent_at=104)
    assert clock.holds(112)
    clock.lost()
    assert not clock.holds(104) and clock.step_down_at() is None


def test_a_renewal_waits_at_most_until_the_step_down() -> None:
    clock = LeaseClock(ttl_s=10, renew_s=2)
    assert clock.renewal_budget(0) == 2  # never held: one interval
    clock.renewed(sent_at=100)  # steps down at 109
    assert clock.renewal_budget(102) == 2
    assert clock.renewal_budget(108) == pytest.approx(1)
    assert clock.renewal_budget(108.99) == 0.05  # never less than 50 ms
    assert clock.renewal_budget(110) == 2  # already stepped down: one interval


def test_no_sweep_for_one_ttl_after_the_lease_is_regained() -> None:
    clock = LeaseClock(ttl_s=10, renew_s=2)
    assert clock.may_sweep(0)
    clock.regained(50)
    assert not clock.may_sweep(59.9)
    assert clock.may_sweep(60)


def test_clock_needs_ttl_above_renewal() -> None:
    with pytest.raises(ValueError, match="LEASE_TTL_S"):
        LeaseClock(ttl_s=2, renew_s=2)


def test_a_holder_on_another_host_is_alive_until_its_lease_expires() -> None:
    verdict = judge_holder(
        holder(host="other"), host="h1", own_pid=1, is_live_manager=lambda pid: False
    )
    assert verdict is HolderVerdict.ALIVE


def test_a_holder_on_this_host_is_dead_when_its_pid_is_not_a_live_manager() -> None:
    checked: list[int] = []

    def live(pid: int) -> bool:
        checked.append(pid)
        return pid != 4242

    assert judge_holder(holder(), host="h1", own_pid=1, is_live_manager=live) is HolderVerdict.DEAD
    assert checked == [4242]
    alive = judge_holder(holder(pid=77), host="h1", own_pid=1, is_live_manager=live)
    assert alive is HolderVerdict.ALIVE
    # Our own pid (reused after a reboot) is not the holder.
    ours = judge_holder(holder(pid=77), host="h1", own_pid=77, is_live_manager=live)
    assert ours is HolderVerdict.DEAD
    assert judge_holder(holder(pid=None), host="h1", own_pid=1, is_live_manager=live) is (
        HolderVerdict.ALIVE
    )


def test_already_running_is_one_line() -> None:
    message = str(ManagerAlreadyRunning(holder()))
    assert "\n" not in message and "already running" in message and "4242" in message


def test_no_claim_without_a_lease_and_workers_keep_running() -> None:
    sup = make(capacity=3, holds_lease=False)
    assert sup.load([Ev("a", "active")], 0) == []
    assert sup.lease_regained(1) == [Claim("a", "a1")]
    sup.claimed("a", "a1", 1)
    assert sup.phase("a") is Phase.STARTING
    sup.worker_connected("a", "a1", 2)
    assert sup.lease_lost(3) == []
    # Lost: nothing new is claimed (nor a lost answer retried), nothing is stopped.
    actions = sup.apply_events([Ev("b", "active"), Ev("c", "active")], 4)
    assert actions == []
    assert sup.phase("a") is Phase.RUNNING and sup.tick(100) == []
    again = sup.lease_regained(101)
    assert sorted(a.document_id for a in again if isinstance(a, Claim)) == ["b", "c"]
    assert not [a for a in again if isinstance(a, Stop | Spawn)]


def test_an_unanswered_claim_is_not_retried_without_a_lease() -> None:
    sup = make(capacity=1)
    sup.load([Ev("a", "active")], 0)
    sup.claim_unanswered("a", "a1", "lost", 0)
    sup.lease_lost(0.5)
    assert sup.tick(60) == []
    assert sup.lease_regained(61) == [Claim("a", "a1")]


def test_probe_claims_documents_freed_elsewhere_at_once() -> None:
    sup = make(capacity=2)
    sup.load([Ev("a", "active"), Ev("b", "active")], 0)
    for doc in ("a", "b"):
        agent = sup.agent_id(doc)
        assert agent is not None
        sup.claim_refused(doc, agent, owner_manager_id="m2", owner_agent_id="x" + doc, now=0)
    assert sorted(sup.owned_elsewhere_documents()) == ["a", "b"]
    assert sup.tick(1) == []  # claim_retry_s has not passed
    actions = sup.documents_claimable(["b", "unknown"], 2)
    assert [(a.document_id, type(a)) for a in actions] == [("b", Claim)]
    assert sup.owned_elsewhere_documents() == ["a"]
    assert sup.documents_claimable(["b"], 2) == []  # nothing to do twice


def test_placement_picks_exactly_one_manager_per_document_weighted_by_free_slots() -> None:
    names = ("m1", "m2", "m3")
    sups = {}
    for name in names:
        ids = itertools.count(1)
        sup = Supervisor(10, new_agent_id=lambda ids=ids: f"a{next(ids)}", manager_id=name)
        sup.fleet_changed({other: 10 for other in names}, 0)
        sups[name] = sup
    picks = {name: 0 for name in names}
    for n in range(600):
        chosen = [name for name, sup in sups.items() if sup.placed_here(f"doc-{n}")]
        assert len(chosen) == 1  # the same view: every manager agrees
        picks[chosen[0]] += 1
    assert min(picks.values()) > 150, picks
    # Fewer free slots, fewer picks; a full manager is never the pick.
    m1 = sups["m1"]  # 10 free slots of its own
    m1.fleet_changed({"m2": 0, "m3": 2}, 0)
    here = sum(m1.placed_here(f"doc-{n}") for n in range(600))
    assert 420 < here < 580  # about 10 / 12 of them
    m1.fleet_changed({"m2": 0, "m3": 0}, 0)
    assert all(m1.placed_here(f"doc-{n}") for n in range(50))


def test_a_document_placed_elsewhere_is_claimed_only_after_the_delay() -> None:
    sup = Supervisor(
        10, new_agent_id=lambda: "a1", manager_id="m1", placement_delay_s=1.0, min_residency_s=0
    )
    sup.fleet_changed({"m2": 1000}, 0)  # m2 is the pick for nearly everything
    doc = next(f"d{n}" for n in range(100) if not sup.placed_here(f"d{n}"))
    assert sup.apply_events([Ev(doc, "active")], 0) == []
    assert sup.next_deadline(0) == 1.0
    assert sup.tick(0.5) == []
    assert [type(a) for a in sup.tick(1.0)] == [Claim]
    # Without peers (one manager alone) a document is claimed at once.
    alone = Supervisor(10, new_agent_id=lambda: "b1", manager_id="m1")
    assert [type(a) for a in alone.apply_events([Ev(doc, "active")], 0)] == [Claim]


def test_a_drain_with_no_other_manager_free_detaches_every_agent_at_once() -> None:
    sup = make(capacity=3)
    sup.load([Ev("a", "active"), Ev("b", "active"), Ev("c", "active")], 0)
    for doc in ("a", "b"):
        agent = sup.agent_id(doc)
        assert agent is not None
        sup.claimed(doc, agent, 0)
        sup.worker_connected(doc, agent, 1)
    # "c"'s claim is still in flight.
    actions = sup.drain(2)
    assert sorted(stop.document_id for stop in actions if isinstance(stop, Stop)) == ["a", "b"]
    assert {stop.reason for stop in actions if isinstance(stop, Stop)} == {"drained"}
    c_agent = sup.agent_id("c")
    assert c_agent is not None
    ended = sup.claimed("c", c_agent, 3)  # answered now: ended at once, no worker
    assert [(type(a).__name__, getattr(a, "reason", None)) for a in ended] == [
        ("EndLife", "drained")
    ]
    for doc in ("a", "b"):
        agent = sup.agent_id(doc)
        assert agent is not None
        after = sup.worker_exited(doc, agent, "exited with code 0", 4)
        assert [a.reason for a in after if isinstance(a, EndLife)] == ["drained"]
        assert not [a for a in after if isinstance(a, Claim | Spawn)]
    assert sup.apply_events([Ev("d", "active")], 5) == []
    assert sup.tick(100) == [] and sup.lives == 0


def lease(
    manager_id: str, state: str = "leading", *, agents: int = 3, **changes: object
) -> ManagerLease:
    return replace(holder(), manager_id=manager_id, state=state, agents=agents, **changes)  # type: ignore[arg-type]


def test_a_lease_counts_the_databases_live_rows_before_what_the_manager_reported() -> None:
    assert lease_agents(lease("m1", agents=3)) == 3
    assert lease_agents(lease("m1", agents=3, live_agents=5)) == 5
    assert free_slots(lease("m1", agents=3, live_agents=12)) == 0  # never negative
    assert free_slots(lease("m1", "draining", agents=3)) == 7
    assert free_slots(lease("m1", "expired")) is None
    assert free_slots(lease("m1", "stopped")) is None


def test_placement_weighs_only_leading_managers_by_their_free_slots() -> None:
    leases = [
        lease("m1", agents=3),
        lease("m2", "draining", agents=0),
        lease("m3", "expired", agents=0),
        lease("m4", agents=10),
    ]
    assert placement_slots(leases) == {"m1": 7, "m4": 0}


def test_the_next_peer_expiry_is_the_first_live_peer_with_agents() -> None:
    now = datetime.now(UTC)

    def expiring(manager_id: str, in_s: float, **changes: object) -> ManagerLease:
        return lease(
            manager_id, renewed_at=now, expires_at=now + timedelta(seconds=in_s), **changes
        )

    leases = [
        expiring("me", 1.0),  # this manager's own lease
        expiring("idle", 2.0, agents=0),  # no documents to take over
        expiring("gone", 3.0, state="expired"),  # already swept
        expiring("late", 8.0, lease_age_s=2.0),  # read 2 s after its renewal: 6 s left
        expiring("soon", 9.0, state="draining", lease_age_s=4.0),  # 5 s left
    ]
    assert next_peer_expiry(leases, "me") == pytest.approx(5.0)
    assert next_peer_expiry(leases[:3], "me") is None
    assert next_peer_expiry([expiring("past", 1.0, lease_age_s=3.0)], "me") == 0.0
