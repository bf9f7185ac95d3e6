"""ClaimBatcher with a fake store: what queues up goes as one call; failures stay narrow."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from manager.errors import StoreError, StoreUnavailable
from manager.store.base import AgentRow, ClaimResult
from manager.supervise.claims import ClaimBatcher

pytestmark = pytest.mark.anyio


def result(document_id: str, agent_id: str) -> ClaimResult:
    row = AgentRow(
        id=uuid.uuid4(),
        document_id=document_id,
        agent_id=agent_id,
        manager_id="m1",
        manager_host=None,
        agent_pid=None,
        status="connecting",
        connected_at=datetime.now(UTC),
    )
    return ClaimResult(claimed=True, row=row)


class FakeStore:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.singles: list[str] = []
        self.refuse: set[str] = set()
        self.down = False
        self.gate: anyio.Event | None = None

    async def claim_documents(
        self,
        claims: Sequence[tuple[str, str]],
        manager_id: str,
        host: Any,
        metadata: Any,
        supersedes: Any = None,
    ) -> list[ClaimResult]:
        self.batches.append([d for d, _ in claims])
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise StoreUnavailable("down")
        if any(d in self.refuse for d, _ in claims):
            raise StoreError("one claim refused: the statement is rolled back")
        return [result(d, a) for d, a in claims]

    async def claim_document(
        self,
        document_id: str,
        agent_id: str,
        manager_id: str,
        host: Any,
        metadata: Any,
        supersedes: Any = None,
    ) -> ClaimResult:
        self.singles.append(document_id)
        if document_id in self.refuse:
            raise StoreError(f"{document_id} refused")
        return result(document_id, agent_id)


async def claim_all(
    batcher: ClaimBatcher, docs: list[str]
) -> dict[str, ClaimResult | BaseException]:
    out: dict[str, ClaimResult | BaseException] = {}

    async def one(doc: str) -> None:
        try:
            out[doc] = await batcher.claim(doc, f"agent-{doc}")
        except StoreError as exc:
            out[doc] = exc

    async with anyio.create_task_group() as tg:
        for doc in docs:
            tg.start_soon(one, doc)
    return out


@pytest.fixture
async def running() -> Any:
    store = FakeStore()
    batcher = ClaimBatcher(store, "m1", "host", {})  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run)
        yield store, batcher
        tg.cancel_scope.cancel()


async def test_claims_asked_together_go_as_one_call(running: Any) -> None:
    store, batcher = running
    docs = [f"d{n}" for n in range(50)]
    out = await claim_all(batcher, docs)
    assert store.batches == [docs]
    assert all(isinstance(r, ClaimResult) and r.row.document_id == d for d, r in out.items())


async def test_claims_asked_during_a_call_go_in_the_next(running: Any) -> None:
    store, batcher = running
    store.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(claim_all, batcher, ["a"])
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(claim_all, batcher, ["b", "c"])
        await anyio.wait_all_tasks_blocked()
        store.gate.set()
    assert store.batches == [["a"], ["b", "c"]]


async def test_a_refused_batch_is_retried_one_by_one(running: Any) -> None:
    store, batcher = running
    store.refuse.add("bad")
    out = await claim_all(batcher, ["x", "bad", "y"])
    assert store.singles == ["x", "bad", "y"]
    assert isinstance(out["bad"], StoreError) and "bad refused" in str(out["bad"])
    assert isinstance(out["x"], ClaimResult) and isinstance(out["y"], ClaimResult)


async def test_an_unreachable_store_fails_the_whole_batch(running: Any) -> None:
    store, batcher = running
    store.down = True
    out = await claim_all(batcher, ["x", "y"])
    assert all(isinstance(r, StoreUnavailable) for r in out.values())
    assert store.singles == []


async def test_a_claim_cancelled_before_it_is_sent_is_never_sent(running: Any) -> None:
    store, batcher = running
    store.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(claim_all, batcher, ["first"])
        await anyio.wait_all_tasks_blocked()  # "first" is in flight
        with anyio.move_on_after(0.05):
            await batcher.claim("gone", "agent-gone")
        tg.start_soon(claim_all, batcher, ["later"])
        await anyio.wait_all_tasks_blocked()
        store.gate.set()
    assert store.batches == [["first"], ["later"]]
