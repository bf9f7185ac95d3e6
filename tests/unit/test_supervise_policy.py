"""The supervisor's rules of thumb alone: backoffs, placement, the eviction choice."""

from __future__ import annotations

from manager.supervise.documents import DocumentState, Phase
from manager.supervise.policy import RestartPolicy, allot_slots, placement_pick


def doc(name: str, recency: int, phase: Phase = Phase.NO_WORKER) -> DocumentState:
    return DocumentState(name, wanted=True, recency=recency, phase=phase)


def names(plan: list[tuple[DocumentState, DocumentState | None]]) -> list[tuple[str, str | None]]:
    return [(d.document_id, None if v is None else v.document_id) for d, v in plan]


def test_backoffs_double_up_to_their_caps() -> None:
    policy = RestartPolicy(backoff_min_s=1, backoff_max_s=10, claim_retry_s=5)
    assert [policy.backoff(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert [policy.claim_backoff(n) for n in range(1, 5)] == [1, 2, 4, 5]
    assert policy.backoff(10_000) == 10  # no overflow however long the loop


def test_a_crash_of_a_wanted_document_backs_off_then_blocks_it_as_a_crash_loop() -> None:
    policy = RestartPolicy(backoff_min_s=1, crash_loop_restarts=2, crash_loop_window_s=100)
    d = doc("d", 1, Phase.RUNNING)
    first = policy.crashed(d, "a1", "exited with code 1", 10)
    assert (first.status, first.reason, d.not_before) == (
        "disconnected",
        "crashed: exited with code 1",
        11,
    )
    policy.crashed(d, "a2", "exited with code 1", 20)
    third = policy.crashed(d, "a3", "exited with code 1", 30)
    assert third.status == "error" and third.code == "crash_loop"
    assert d.blocked == "crash_loop"


def test_free_slots_go_to_the_most_recent_waiting_documents() -> None:
    plan = allot_slots([doc("old", 1), doc("new", 3), doc("mid", 2)], [], free=2, terminating=0)
    assert names(plan) == [("new", None), ("mid", None)]


def test_a_full_manager_evicts_the_least_recent_worker_only_for_a_more_recent_document() -> None:
    workers = [doc("w5", 5, Phase.RUNNING), doc("w1", 1, Phase.RUNNING)]
    plan = allot_slots([doc("d3", 3), doc("d9", 9), doc("d0", 0)], workers, free=0, terminating=0)
    assert names(plan) == [("d9", "w1")]  # d3 is less recent than w5, the next victim: it waits


def test_no_eviction_for_a_document_owned_elsewhere_and_a_slot_on_its_way_out_is_used() -> None:
    workers = [doc("w1", 1, Phase.RUNNING), doc("w2", 2, Phase.RUNNING)]
    waiting = [doc("elsewhere", 9, Phase.OWNED_ELSEWHERE), doc("d8", 8), doc("d7", 7)]
    plan = allot_slots(waiting, workers, free=0, terminating=1)
    # d8 waits for the terminating worker's slot; d7 evicts the least recent worker.
    assert names(plan) == [("d7", "w1")]


def test_a_document_without_an_agent_gets_a_free_slot_before_retries_of_owned_ones() -> None:
    """Found by the property test: two documents owned elsewhere, more recent than a
    waiting one, took turns on the one free slot and the waiting one never ran."""
    waiting = [
        doc("elsewhere-a", 9, Phase.OWNED_ELSEWHERE),
        doc("elsewhere-b", 8, Phase.OWNED_ELSEWHERE),
        doc("c", 1),
    ]
    assert names(allot_slots(waiting, [], free=1, terminating=0)) == [("c", None)]
    assert names(allot_slots(waiting, [], free=2, terminating=0)) == [
        ("c", None),
        ("elsewhere-a", None),
    ]


def test_placement_picks_one_manager_with_free_slots_the_same_everywhere() -> None:
    members = [("m1", 3), ("m2", 0), ("m3", 5)]
    picks = {placement_pick(f"doc-{n}", members) for n in range(200)}
    assert picks == {"m1", "m3"}  # never a full manager
    assert placement_pick("doc-1", members) == placement_pick("doc-1", list(reversed(members)))
    assert placement_pick("doc-1", [("m1", 0), ("m2", 0)]) is None
