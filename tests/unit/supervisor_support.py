"""Driving the supervisor by hand in unit tests: events, a factory, action filters."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from manager.supervise.supervisor import Claim, Phase, RestartPolicy, Spawn, Stop, Supervisor


@dataclass(frozen=True)
class Ev:
    """An activity event as the supervisor reads it."""

    document_id: str
    event_type: str
    user_count: int = 1
    edit: bool = False


def make(
    capacity: int = 2,
    residency: float = 10.0,
    *,
    drain_timeout_s: float = 15.0,
    handoff_grace_s: float = 5.0,
    **policy: float,
) -> Supervisor:
    ids = itertools.count(1)
    return Supervisor(
        capacity,
        min_residency_s=residency,
        policy=RestartPolicy(**policy),  # type: ignore[arg-type]
        new_agent_id=lambda: f"a{next(ids)}",
        manager_id="m1",
        drain_timeout_s=drain_timeout_s,
        handoff_grace_s=handoff_grace_s,
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
    """The document's life claimed (if still claiming) and its worker connected."""
    agent = sup.agent_id(doc)
    assert agent is not None
    if sup.phase(doc) is Phase.CLAIMING:
        sup.claimed(doc, agent, now)
    sup.worker_connected(doc, agent, now)
    return agent
