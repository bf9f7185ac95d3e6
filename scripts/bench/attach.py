"""Attach latency (one at a time, bursts), memory per idle worker, and capacity.

All in one in-process manager: committed ``document_activity`` INSERT -> the
worker's ``connected`` message read by the manager.

Bursts run ``burst_trials`` times each (the machine's noise is a few hundred ms);
the median trial is reported, with every trial's total next to it. Before each
trial, its floor: as many bare forkserver children started at once
(:func:`floors.forkserver_burst_ms`); the ratio reported is the median of the
trials' ratios, each trial against the floor taken just before it.

Capacity: :mod:`scripts.bench.capacity` ramps the same manager to N running
agents (N in ``capacity_steps``, up to 1,000), with memory, CPU and the machine's
limits at each step.
"""

from __future__ import annotations

from typing import Any

import anyio

from scripts.bench import capacity, floors
from scripts.bench.stack import ManagerRun, Stack, summary


async def _one(stack: Stack, run: ManagerRun, doc: str, within: float = 30.0) -> float:
    committed = stack.events([doc], "active")
    await run.wait_connected([doc], within=within)
    return (run.connected[doc] - committed) * 1000


async def _idle_all(stack: Stack, run: ManagerRun, docs: list[str]) -> None:
    for start in range(0, len(docs), 500):
        stack.events(docs[start : start + 500], "idle")
    await run.wait_running(0, within=max(120.0, 0.3 * len(docs)))


async def _burst(stack: Stack, run: ManagerRun, docs: list[str]) -> dict[str, Any]:
    committed = stack.events(docs, "active")
    await run.wait_connected(docs, within=180)
    spans = sorted((run.connected[d] - committed) * 1000 for d in docs)
    return {
        "n": len(docs),
        "all_connected_ms": spans[-1],
        "spans_ms": spans,
        **{"first_ms": spans[0], "median_ms": spans[len(spans) // 2]},
    }


async def run(stack: Stack, cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cap = max(cfg["capacity_steps"] + cfg["bursts"]) + cfg["probes"] + 20
    settings = stack.settings(max_concurrent_agents=cap, flush_interval_s=0.5)
    async with stack.manager(settings) as run_:
        launcher = run_.launcher
        # warm-up: the first worker and the docserver's first room
        await _one(stack, run_, "warm")
        await _idle_all(stack, run_, ["warm"])
        await anyio.sleep(1)  # the pool is full and booted: the floors run on a quiet machine
        out["floor_forkserver_first_message_ms"] = await floors.forkserver_floor()
        out["floor_bare_python"] = floors.bare_python_memory()

        latencies: list[float] = []
        for i in range(cfg["sequential"]):
            doc = f"seq-{i}"
            latencies.append(await _one(stack, run_, doc))
            stack.events([doc], "idle")
            await anyio.sleep(0.02)  # let the pool refill, as between real arrivals
        await run_.wait_running(0, within=60)
        out["sequential_ms"] = {**summary(latencies), "samples": latencies}
        out["pool"] = {
            "hits": launcher.pool_hits,
            "misses": launcher.pool_misses,
            "size": launcher.warm_pool,
        }

        out["bursts"] = {}
        for n in cfg["bursts"]:
            trials: list[dict[str, Any]] = []
            floor_ms: list[float] = []
            for t in range(cfg["burst_trials"]):
                # Its floor right before each trial: this machine's speed for forks
                # and page faults moves by half within minutes.
                await anyio.sleep(0.5)
                floor_ms.append(await floors.forkserver_burst_floor(n))
                await anyio.sleep(1.5)  # the pool refills, the machine settles
                docs = [f"burst{n}-{t}-{i}" for i in range(n)]
                trials.append(await _burst(stack, run_, docs))
                await _idle_all(stack, run_, docs)
            # The median trial (its spans are the plot); every trial's total too.
            pairs = zip(trials, floor_ms, strict=True)
            ratios = sorted(b["all_connected_ms"] / f for b, f in pairs)
            trials.sort(key=lambda b: b["all_connected_ms"])
            out["bursts"][str(n)] = {
                **trials[len(trials) // 2],
                "trials_ms": [b["all_connected_ms"] for b in trials],
                "floor_trials_ms": floor_ms,
                "floor_ms": sorted(floor_ms)[len(floor_ms) // 2],
                "ratio_to_floor": ratios[len(ratios) // 2],
            }

        # memory at a few counts, and the capacity ramp (to 1,000 agents)
        out["memory"], out["capacity"], ramp = await capacity.ramp(
            stack, run_, cfg, burst=_burst, one=_one
        )
        await _idle_all(stack, run_, ramp)
    return out
