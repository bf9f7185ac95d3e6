"""The answers about one life, driven by hand: its claim's answer (made, refused,
lost) and its worker's reports (connected, error, unhealthy, exited, fenced)."""

from __future__ import annotations

from supervisor_support import Ev, claimed, drive, make, run, starts, stops

from manager.supervise.supervisor import (
    Claim,
    EndLife,
    Kill,
    Phase,
    Spawn,
)


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
