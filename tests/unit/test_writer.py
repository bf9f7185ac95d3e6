"""StoreWriter with a fake store: batching, ordering, the bound, buffering while down."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from manager.errors import StoreError, StoreUnavailable
from manager.store.base import BatchId, MetricsRecord, StatusChange
from manager.store.writer import StoreWriter

pytestmark = pytest.mark.anyio


class FakeStore:
    """Records calls; raises StoreUnavailable while ``down``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.down = False
        self.refuse: set[str] = set()
        self.metrics_written = anyio.Event()
        self.batches: list[int] = []  # sizes of the set_agent_statuses calls
        self.batch_ids: list[BatchId | None] = []
        self.ended_at: list[datetime] = []

    def _check(self, agent_id: str = "") -> None:
        if self.down:
            raise StoreUnavailable("down")
        if agent_id in self.refuse:
            raise StoreError("refused")

    async def set_agent_status(
        self, agent_id: str, status: str, pid: int | None = None, metadata: Any = None
    ) -> None:
        self._check(agent_id)
        self.calls.append(("status", (agent_id, status, pid)))

    async def set_agent_statuses(self, changes: Sequence[StatusChange]) -> int:
        """All or nothing, as the one-statement Postgres call."""
        for change in changes:
            self._check(change.agent_id)
        self.batches.append(len(changes))
        self.calls.extend(("status", (c.agent_id, c.status, c.pid)) for c in changes)
        return len(changes)

    async def end_agent_lives_at(
        self, ends: Sequence[tuple[str, str, str | None, datetime]]
    ) -> list[Any]:
        for agent_id, status, reason, ended_at in ends:
            self._check(agent_id)
            self.calls.append(("end", (agent_id, status, reason)))
            self.ended_at.append(ended_at)
        return []

    async def record_metrics(
        self, batch: Sequence[MetricsRecord], batch_id: BatchId | None = None
    ) -> int | None:
        self._check()
        self.calls.append(("metrics", list(batch)))
        self.batch_ids.append(batch_id)
        self.metrics_written.set()
        return len(batch)


async def test_many_metrics_one_call_and_counters_coalesced() -> None:
    store = FakeStore()
    writer = StoreWriter(store)  # type: ignore[arg-type]
    for i in range(50):
        writer.add_metrics("a1", memory_mb=float(i))
        writer.count("a1", llm_calls=1, locations_marked=2)
    writer.count("a2", locations_marked=1)
    assert writer.pending == 52
    await writer.flush()
    assert [kind for kind, _ in store.calls] == ["metrics"]
    batch = store.calls[0][1]
    assert len(batch) == 52
    assert [r.memory_mb for r in batch[:50]] == [float(i) for i in range(50)]
    totals = {r.agent_id: (r.llm_calls, r.locations_marked) for r in batch[50:]}
    assert totals == {"a1": (50, 100), "a2": (0, 1)}
    assert writer.pending == 0
    await writer.flush()
    assert len(store.calls) == 1  # nothing pending: no call


async def test_status_changes_in_submission_order() -> None:
    store = FakeStore()
    writer = StoreWriter(store)  # type: ignore[arg-type]
    writer.set_status("a1", "connecting")
    writer.set_status("a2", "active", pid=7)
    writer.set_status("a1", "active", pid=5)
    writer.end_life("a1", "disconnected", "idle")
    await writer.flush()
    assert store.calls == [
        ("status", ("a1", "connecting", None)),
        ("status", ("a2", "active", 7)),
        ("status", ("a1", "active", 5)),
        ("end", ("a1", "disconnected", "idle")),
    ]


async def test_full_buffer_drops_oldest_samples_never_status() -> None:
    store = FakeStore()
    writer = StoreWriter(store, max_pending=5)  # type: ignore[arg-type]
    writer.set_status("a", "active")
    for i in range(10):
        writer.add_metrics("a", memory_mb=float(i))
    writer.end_life("a", "disconnected", None)
    writer.set_status("b", "active")
    writer.set_status("b", "detaching")
    writer.end_life("b", "disconnected", None)
    # 5 status changes leave no room for samples; none of them is dropped.
    assert writer.pending == 5
    assert writer.dropped == 10
    await writer.flush()
    assert [kind for kind, _ in store.calls] == ["status", "end", "status", "status", "end"]

    for i in range(8):
        writer.add_metrics("c", memory_mb=float(i))
    await writer.flush()
    assert [r.memory_mb for r in store.calls[-1][1]] == [3.0, 4.0, 5.0, 6.0, 7.0]


async def test_database_down_buffers_then_flushes_in_order() -> None:
    store = FakeStore()
    writer = StoreWriter(store, flush_interval_s=0.05, backoff_min_s=0.01, backoff_max_s=0.05)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        store.down = True
        writer.set_status("a", "active", pid=1)
        writer.add_metrics("a", memory_mb=1.0)
        writer.count("a", llm_calls=1)
        with anyio.fail_after(5):
            while writer.healthy:  # noqa: ASYNC110 - the writer's own state, no event to wait on
                await anyio.sleep(0.01)
        writer.count("a", llm_calls=2)
        writer.end_life("a", "disconnected", "bye")
        assert store.calls == []
        assert writer.pending == 4  # two ops, one sample, one counter
        store.down = False
        with anyio.fail_after(5):
            await store.metrics_written.wait()
        assert writer.healthy
        tg.cancel_scope.cancel()
    # The status change failed first, so no metrics batch was sent while down:
    # one batch with everything, the counts summed.
    assert [call[0] for call in store.calls] == ["status", "end", "metrics"]
    batch = store.calls[2][1]
    assert [(r.memory_mb, r.llm_calls) for r in batch] == [(1.0, 0), (None, 3)]


async def test_refused_write_is_dropped_and_the_rest_goes_on() -> None:
    store = FakeStore()
    store.refuse.add("bad")
    writer = StoreWriter(store)  # type: ignore[arg-type]
    writer.set_status("bad", "active")
    writer.set_status("good", "active")
    await writer.flush()
    assert store.calls == [("status", ("good", "active", None))]


async def test_a_run_of_status_changes_is_one_call_and_a_refusal_splits_it() -> None:
    store = FakeStore()
    writer = StoreWriter(store)  # type: ignore[arg-type]
    for n in range(3):
        writer.set_status(f"a{n}", "active", pid=n)
    writer.end_life("a0", "disconnected", "idle")
    writer.set_status("a1", "detaching")
    await writer.flush()
    assert store.batches == [3]  # the end-of-life and the lone change after it go alone
    assert [args for _, args in store.calls] == [
        ("a0", "active", 0),
        ("a1", "active", 1),
        ("a2", "active", 2),
        ("a0", "disconnected", "idle"),
        ("a1", "detaching", None),
    ]

    store.calls.clear()
    store.refuse.add("bad")
    for agent_id in ("x", "bad", "y"):
        writer.set_status(agent_id, "active")
    await writer.flush()
    # The batch was refused as a whole; written one by one, only "bad" is dropped.
    assert store.calls == [("status", ("x", "active", None)), ("status", ("y", "active", None))]
    assert writer.pending == 0


async def test_a_run_of_status_changes_stays_buffered_while_down() -> None:
    store = FakeStore()
    writer = StoreWriter(store)  # type: ignore[arg-type]
    writer.set_status("a", "active")
    writer.set_status("b", "active")
    store.down = True
    with pytest.raises(StoreUnavailable):
        await writer.flush()
    assert writer.pending == 2
    store.down = False
    await writer.flush()
    assert store.calls == [("status", ("a", "active", None)), ("status", ("b", "active", None))]


async def test_cancel_does_a_final_flush_and_double_run_raises() -> None:
    store = FakeStore()
    writer = StoreWriter(store, flush_interval_s=60)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        with pytest.raises(RuntimeError):
            await writer.run()
        writer.add_metrics("a", cpu_percent=2.0)
        tg.cancel_scope.cancel()
    assert [kind for kind, _ in store.calls] == ["metrics"]


class LostAnswerStore(FakeStore):
    """Records a metrics batch, then loses the answer (the connection dropped after
    the commit) ``lose`` times; keeps what a database would: one count per batch id."""

    def __init__(self, lose: int) -> None:
        super().__init__()
        self.lose = lose
        self.recorded: dict[BatchId, list[MetricsRecord]] = {}
        self.attempts: list[BatchId | None] = []

    async def record_metrics(
        self, batch: Sequence[MetricsRecord], batch_id: BatchId | None = None
    ) -> int | None:
        self._check()
        assert batch_id is not None
        self.attempts.append(batch_id)
        repeat = batch_id in self.recorded
        if not repeat:
            self.recorded[batch_id] = list(batch)
        if self.lose:
            self.lose -= 1
            raise StoreUnavailable("connection lost before the answer")
        return None if repeat else len(batch)

    def llm_calls(self) -> int:
        return sum(r.llm_calls for batch in self.recorded.values() for r in batch)


async def test_a_batch_whose_answer_was_lost_goes_again_with_its_id() -> None:
    store = LostAnswerStore(lose=2)
    writer = StoreWriter(store)  # type: ignore[arg-type]
    writer.add_metrics("a", memory_mb=1.0)
    writer.count("a", llm_calls=5)
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await writer.flush()
        assert writer.pending == 2
    writer.count("a", llm_calls=1)  # arrives while the first batch is unanswered
    await writer.flush()
    assert writer.pending == 0
    first, again, again2, newer = store.attempts
    assert first == again == again2
    assert newer.writer_id == first.writer_id and newer.seq == first.seq + 1
    assert store.llm_calls() == 6  # not 11 or 16


async def test_the_buffer_bound_drops_the_unsent_batch_samples_first() -> None:
    store = FakeStore()
    writer = StoreWriter(store, max_pending=4)  # type: ignore[arg-type]
    for i in range(3):
        writer.add_metrics("a", memory_mb=float(i))
    store.down = True
    with pytest.raises(StoreUnavailable):
        await writer.flush()
    for i in range(3, 6):
        writer.add_metrics("a", memory_mb=float(i))
    assert writer.pending == 4
    assert writer.dropped == 2
    store.down = False
    await writer.flush()
    assert [[r.memory_mb for r in batch] for _, batch in store.calls] == [[2.0], [3.0, 4.0, 5.0]]
    assert store.batch_ids[0] is not None and store.batch_ids[1] is not None
    assert store.batch_ids[1].seq == store.batch_ids[0].seq + 1


async def test_writers_have_their_own_ids() -> None:
    store = FakeStore()
    for _ in range(2):
        writer = StoreWriter(store)  # type: ignore[arg-type]
        writer.add_metrics("a", memory_mb=1.0)
        await writer.flush()
    first, second = store.batch_ids
    assert first is not None and second is not None
    assert first.writer_id != second.writer_id


async def test_a_life_ended_during_an_outage_keeps_its_real_end_time() -> None:
    store = FakeStore()
    writer = StoreWriter(store)  # type: ignore[arg-type]
    store.down = True
    before = datetime.now(UTC)
    writer.end_life("a1", "disconnected", "idle")
    after = datetime.now(UTC)
    with pytest.raises(StoreUnavailable):
        await writer.flush()
    store.down = False
    await writer.flush()
    assert store.calls == [("end", ("a1", "disconnected", "idle"))]
    (ended_at,) = store.ended_at
    assert before <= ended_at <= after  # when end_life was called, not the flush
