"""Failover in a fleet: three managers, ``kill -9`` one, time until its documents move.

Three ``docagents manager`` child processes (distinct ``MANAGER_ID``s, default
``LEASE_TTL_S``/``LEASE_RENEW_S`` unless ``fleet_lease_ttl_s``/``fleet_lease_renew_s``
say otherwise) share the stack's Postgres and docserver; ``fleet_documents``
documents are opened. Each trial kills the manager holding the most of them and
measures the time from the kill until every one of its documents has an active
agent of another manager; then a new process of the killed id rejoins (it takes
the expired lease over) for the next trial. Reported: every trial, p50 and max,
next to ``LEASE_TTL_S`` (target: at most ``LEASE_TTL_S`` + 1 s), and the time
until the first of them is active elsewhere (detection, without the attach time
of the whole batch). Then the manager holding the most documents is drained
(make-before-break): the handoff gap per document as people see it, p50/p99
(:mod:`scripts.bench.handoff`; target p99 at most 200 ms).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import time
from typing import Any

import anyio

from scripts.bench.handoff import measure_drain
from scripts.bench.stack import Stack

MANAGERS = ("bench-fleet-a", "bench-fleet-b", "bench-fleet-c")


def _owners(stack: Stack, docs: list[str]) -> dict[str, str]:
    """document -> manager of its active agent."""
    rows = stack.query(
        "SELECT document_id, manager_id FROM agent_connections"
        " WHERE status = 'active' AND document_id = ANY(%s)",
        (docs,),
    )
    return {doc: manager for doc, manager in rows}


async def _until(predicate: Any, within: float, step: float = 0.02) -> float:
    started = time.perf_counter()
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 (polling the database)
            await anyio.sleep(step)
    return time.perf_counter() - started


async def run(stack: Stack, cfg: dict[str, Any]) -> dict[str, Any]:
    n_docs, n_trials = cfg["fleet_documents"], cfg["fleet_trials"]
    ttl, renew = cfg["fleet_lease_ttl_s"], cfg["fleet_lease_renew_s"]
    docs = [f"fleet-{i}" for i in range(n_docs)]

    def env(manager_id: str) -> dict[str, str]:
        return stack.manager_env(
            MANAGER_ID=manager_id,
            MAX_CONCURRENT_AGENTS=str(n_docs),
            FLUSH_INTERVAL_S="0.2",
            LEASE_TTL_S=str(ttl),
            LEASE_RENEW_S=str(renew),
            MIN_RESIDENCY_S="600",
        )

    trials: list[float] = []
    firsts: list[float] = []  # until the first of its documents is active elsewhere
    moved: list[int] = []
    with contextlib.ExitStack() as managers:
        procs = {
            name: managers.enter_context(stack.manager_process(env(name), f"{name}-0.log"))
            for name in MANAGERS
        }
        await _until(
            lambda: len(stack.query("SELECT 1 FROM manager_leases")) == len(MANAGERS), within=60
        )
        # Every manager has read the fleet (placement) since the last one joined.
        await _until(
            lambda: stack.query(
                "SELECT bool_and(renewed_at > (SELECT max(started_at) FROM manager_leases)"
                " + make_interval(secs => %s)) FROM manager_leases",
                (2 * renew,),
            )[0][0],
            within=60,
        )
        stack.events(docs, "active")
        await _until(lambda: len(_owners(stack, docs)) == n_docs, within=180)
        placement: dict[str, int] = {}
        for manager in _owners(stack, docs).values():
            placement[manager] = placement.get(manager, 0) + 1
        for trial in range(n_trials):
            owners = _owners(stack, docs)
            counts: dict[str, int] = {}
            for manager in owners.values():
                counts[manager] = counts.get(manager, 0) + 1
            victim = max(counts, key=lambda m: counts[m])
            theirs = [doc for doc, manager in owners.items() if manager == victim]
            os.kill(procs[victim].pid, signal.SIGKILL)
            killed = time.perf_counter()
            procs[victim].wait()

            def moved_count(theirs: list[str] = theirs, victim: str = victim) -> int:
                return sum(m != victim for m in _owners(stack, theirs).values())

            everyone = len(theirs)
            await _until(lambda: moved_count() > 0, within=ttl + 120, step=0.01)
            firsts.append(time.perf_counter() - killed)
            await _until(
                lambda everyone=everyone: moved_count() == everyone, within=ttl + 120, step=0.01
            )
            trials.append(time.perf_counter() - killed)
            moved.append(len(theirs))
            procs[victim] = managers.enter_context(
                stack.manager_process(env(victim), f"{victim}-{trial + 1}.log")
            )
        # Every manager has read the fleet since the last one rejoined, then a drain.
        await _until(
            lambda: stack.query(
                "SELECT bool_and(renewed_at > (SELECT max(started_at) FROM manager_leases)"
                " + make_interval(secs => %s)) FROM manager_leases WHERE state = 'leading'",
                (2 * renew,),
            )[0][0],
            within=60,
        )
        owners = _owners(stack, docs)
        counts = {}
        for manager in owners.values():
            counts[manager] = counts.get(manager, 0) + 1
        drained = max(counts, key=lambda m: counts[m])
        drain = await measure_drain(
            stack, drained, [doc for doc, manager in owners.items() if manager == drained]
        )
        stack.events(docs, "idle")
        await _until(lambda: not _owners(stack, docs), within=120)
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
    return {
        "fleet_managers": len(MANAGERS),
        "placement": placement,
        "fleet_documents": n_docs,
        "lease_ttl_s": ttl,
        "lease_renew_s": renew,
        "moved_per_trial": moved,
        "failover_trials_s": trials,
        "first_moved_trials_s": firsts,
        "failover_p50_s": statistics.median(trials),
        "failover_max_s": max(trials),
        **drain,
    }
