"""Property tests of the supervisor: random event/worker histories against invariants.

A small model plays the daemon: it executes the supervisor's actions on a fake fleet
(processes are entries in a dict) and feeds back random worker behaviour (connects,
crashes, slow stops, ping failures, lost claims) and the clock.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from manager.supervisor import EndLife, Kill, RestartPolicy, Start, Stop, Supervisor

DOCS = ["a", "b", "c", "d", "e"]


@dataclass(frozen=True)
class Ev:
    document_id: str
    event_type: str
    user_count: int = 1


class Model:
    def __init__(self, capacity: int, residency: float) -> None:
        ids = itertools.count(1)
        self.sup = Supervisor(
            capacity,
            min_residency_s=residency,
            policy=RestartPolicy(
                backoff_min_s=0.5,
                backoff_max_s=4,
                stable_s=10,
                crash_loop_restarts=3,
                crash_loop_window_s=30,
                claim_retry_s=2,
            ),
            new_agent_id=lambda: f"agent{next(ids)}",
        )
        self.capacity = capacity
        self.now = 0.0
        self.procs: dict[str, tuple[str, str]] = {}  # agent -> (doc, state)
        self.ended: set[str] = set()
        self.latest: dict[str, str] = {}

    def execute(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, Start):
                assert action.agent_id not in self.procs and action.agent_id not in self.ended
                assert action.document_id not in {d for d, _ in self.procs.values()}
                self.procs[action.agent_id] = (action.document_id, "starting")
            elif isinstance(action, Stop | Kill):
                doc, state = self.procs[action.agent_id]
                assert doc == action.document_id and state in ("starting", "running")
                self.procs[action.agent_id] = (
                    doc,
                    "stopping" if isinstance(action, Stop) else "killing",
                )
            elif isinstance(action, EndLife):
                assert action.agent_id not in self.procs  # only after the process is gone
                assert action.agent_id not in self.ended
                self.ended.add(action.agent_id)
        self.check()

    def check(self) -> None:
        assert len(self.procs) <= self.capacity
        docs = [d for d, _ in self.procs.values()]
        assert len(docs) == len(set(docs))
        assert self.sup.running == len(self.procs)

    def pick(self, index: int, *states: str) -> tuple[str, str] | None:
        agents = sorted(a for a, (_, s) in self.procs.items() if s in states)
        if not agents:
            return None
        agent = agents[index % len(agents)]
        return agent, self.procs[agent][0]

    def exit(self, agent: str, doc: str, how: str) -> None:
        del self.procs[agent]
        self.execute(self.sup.worker_exited(doc, agent, how, self.now))

    def step(self, op: tuple) -> None:
        kind = op[0]
        if kind == "events":
            events = [Ev(DOCS[d], t, 0 if t == "idle" else 1) for d, t in op[1]]
            for event in events:
                if event.event_type in ("active", "user_joined", "idle"):
                    self.latest[event.document_id] = event.event_type
            self.execute(self.sup.apply_events(events, self.now))
        elif kind == "advance":
            self.now += op[1]
            self.execute(self.sup.tick(self.now))
        elif kind == "connect" and (p := self.pick(op[1], "starting")):
            self.procs[p[0]] = (p[1], "running")
            self.execute(self.sup.worker_connected(p[1], p[0], self.now))
        elif kind == "crash" and (
            p := self.pick(op[1], "starting", "running", "stopping", "killing")
        ):
            self.exit(p[0], p[1], "killed by SIGKILL")
        elif kind == "finish" and (p := self.pick(op[1], "stopping", "killing")):
            self.exit(p[0], p[1], "exited with code 0")
        elif kind == "unhealthy" and (p := self.pick(op[1], "starting", "running")):
            self.execute(self.sup.worker_unhealthy(p[1], p[0], "no pong", self.now))
        elif kind == "claim_lost" and (p := self.pick(op[1], "starting")):
            del self.procs[p[0]]
            self.ended.add(p[0])  # no row of ours: nothing to end
            self.execute(self.sup.claim_failed(p[1], p[0], "owned elsewhere", self.now))
        elif kind == "activity" and (p := self.pick(op[1], "running")):
            what = "abandoned" if op[2] else "edit"
            self.execute(self.sup.worker_activity(p[1], p[0], what, self.now))

    def settle(self) -> None:
        """No more faults: workers connect, stops finish, time passes."""
        for _ in range(200):
            before = (dict(self.procs), self.sup.waiting)
            for agent, (doc, state) in list(self.procs.items()):
                if state == "starting":
                    self.procs[agent] = (doc, "running")
                    self.execute(self.sup.worker_connected(doc, agent, self.now))
                elif state in ("stopping", "killing"):
                    self.exit(agent, doc, "exited with code 0")
            self.now += 5
            self.execute(self.sup.tick(self.now))
            if (dict(self.procs), self.sup.waiting) == before and all(
                s == "running" for _, s in self.procs.values()
            ):
                break


event_types = st.sampled_from(["active", "active", "idle", "user_joined", "user_left"])
ops = st.one_of(
    st.tuples(
        st.just("events"),
        st.lists(st.tuples(st.integers(0, len(DOCS) - 1), event_types), min_size=1, max_size=6),
    ),
    st.tuples(st.just("advance"), st.floats(0, 12)),
    st.tuples(st.just("connect"), st.integers(0, 9)),
    st.tuples(st.just("crash"), st.integers(0, 9)),
    st.tuples(st.just("finish"), st.integers(0, 9)),
    st.tuples(st.just("unhealthy"), st.integers(0, 9)),
    st.tuples(st.just("claim_lost"), st.integers(0, 9)),
    st.tuples(st.just("activity"), st.integers(0, 9), st.booleans()),
)


@settings(max_examples=400, deadline=None)
@given(
    capacity=st.integers(1, 4),
    residency=st.sampled_from([0.0, 3.0, 10.0]),
    history=st.lists(ops, max_size=80),
)
def test_invariants_hold_and_wanted_documents_eventually_run(
    capacity: int, residency: float, history: list[tuple]
) -> None:
    model = Model(capacity, residency)
    for op in history:
        model.step(op)  # check() runs after every batch of actions
    model.settle()
    wanted = {
        doc
        for doc, last in model.latest.items()
        if last in ("active", "user_joined") and model.sup.blocked(doc) is None
    }
    running = {doc for doc, state in model.procs.values() if state == "running"}
    assert running <= wanted
    assert len(running) == min(capacity, len(wanted))
    assert model.sup.tracked() <= len(DOCS)


@settings(max_examples=100, deadline=None)
@given(
    history=st.lists(
        st.tuples(st.integers(0, 999), st.sampled_from(["active", "idle"])), max_size=400
    )
)
def test_memory_is_bounded_by_wanted_and_running_documents(history: list[tuple[int, str]]) -> None:
    model = Model(3, 0.0)
    model.step(("events", []))
    events = [Ev(f"doc{d}", t, 0 if t == "idle" else 1) for d, t in history]
    model.execute(model.sup.apply_events(events, 0))
    latest = {e.document_id: e.event_type for e in events}
    wanted = sum(1 for t in latest.values() if t == "active")
    assert model.sup.tracked() == wanted
