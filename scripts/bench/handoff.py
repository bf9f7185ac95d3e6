"""The handoff gap of a drain: how long each document is without an agent, as people see it.

One watcher per document (a y-websocket connection that only reads the awareness,
as a person's editor shows who is there) records when an agent is present. The
fleet scenario drains one manager (``drain_manager()``, what ``docagents drain``
runs); a document's gap is the time it had no agent in its awareness between the
drain and the moment its old agent was gone (make-before-break: 0 when the new
agent showed itself in the same moment the old one left).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc
from pycrdt import Awareness, Doc, YMessageType, read_message
from websockets.asyncio.client import connect

from scripts.bench.stack import Stack, pct

__all__ = ["AgentWatcher", "measure_drain"]


class AgentWatcher:
    """One document's awareness as a person sees it: which agents are there, and when
    none was (``perf_counter`` times)."""

    def __init__(self) -> None:
        self.awareness = Awareness(Doc())
        self.agents: set[int] = set()
        self.absent_since: float | None = None
        self.absences: list[tuple[float, float]] = []
        self._changed = anyio.Event()

    def _apply(self, message: bytes, now: float) -> None:
        self.awareness.apply_awareness_update(read_message(message[1:]), "remote")
        self.agents = {
            client
            for client, state in self.awareness.states.items()
            if isinstance(state, dict) and state.get("type") == "agent"
        }
        if not self.agents and self.absent_since is None:
            self.absent_since = now
        elif self.agents and self.absent_since is not None:
            self.absences.append((self.absent_since, now))
            self.absent_since = None
        self._changed.set()
        self._changed = anyio.Event()

    async def run(
        self, url: str, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with connect(url, proxy=None, max_size=None) as websocket:
            task_status.started()
            async for message in websocket:
                if isinstance(message, bytes) and message[:1] == bytes([YMessageType.AWARENESS]):
                    self._apply(message, time.perf_counter())

    async def wait_for(self, predicate: Any, within: float) -> None:
        with anyio.fail_after(within):
            while not predicate(self):
                await self._changed.wait()

    def gap_s(self, since: float, until: float) -> float:
        """Time without an agent between ``since`` and ``until``."""
        spans = list(self.absences)
        if self.absent_since is not None:
            spans.append((self.absent_since, until))
        return sum(max(0.0, min(end, until) - max(start, since)) for start, end in spans)


async def measure_drain(stack: Stack, victim: str, docs: Iterable[str]) -> dict[str, Any]:
    """Drain ``victim`` while watching ``docs`` (its documents); the gaps and timings."""
    assert stack.docserver is not None
    docs = list(docs)
    watchers = {doc: AgentWatcher() for doc in docs}
    async with AsyncExitStack() as stack_of_tasks:
        tg = await stack_of_tasks.enter_async_context(anyio.create_task_group())
        for doc, watcher in watchers.items():
            await tg.start(watcher.run, stack.docserver.ws_url(doc))
        for watcher in watchers.values():
            await watcher.wait_for(lambda w: w.agents, within=60)
        old = {doc: set(watcher.agents) for doc, watcher in watchers.items()}
        began = time.perf_counter()
        stack.query("SELECT drain_manager(%s)", (victim,))
        done: dict[str, float] = {}
        for doc, watcher in watchers.items():
            # Handed over: an agent is there and none of the old ones is.
            await watcher.wait_for(lambda w, o=old[doc]: w.agents and not w.agents & o, within=120)
            done[doc] = time.perf_counter()
        gaps_ms = sorted(watchers[doc].gap_s(began, done[doc]) * 1000 for doc in docs)
        tg.cancel_scope.cancel()
    return {
        "drain_documents": len(docs),
        "drain_gap_p50_ms": pct(gaps_ms, 50),
        "drain_gap_p99_ms": pct(gaps_ms, 99),
        "drain_gap_max_ms": max(gaps_ms, default=0.0),
        "drain_gaps_nonzero": sum(1 for g in gaps_ms if g > 0),
        "drain_all_handed_over_s": max(done.values(), default=began) - began,
    }
