"""Claims batched: the lives that want a claim while one is in flight go together.

A burst of starts (crash recovery, a meeting that opens 100 documents) would
otherwise be one ``claim_document`` round trip per life, each waiting its turn
on the store's pool and on a CPU busy booting workers. :class:`ClaimBatcher`
sends whatever has queued up as one
:meth:`~manager.store.base.Store.claim_documents` call (one statement on
Postgres), so a burst costs a round trip or two.

A batch the store refuses (``StoreError``: one claim of it failed, and on
Postgres the statement is one transaction) is retried one claim at a time, so
only the claim at fault fails. ``StoreUnavailable`` fails the whole batch: each
life reports ``claim_unanswered`` and the supervisor claims it again later (same agent id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from manager.errors import StoreError, StoreUnavailable
from manager.store.base import ClaimResult, Store, Supersede

__all__ = ["ClaimBatcher"]

#: At most this many claims in one call.
MAX_BATCH = 200


@dataclass(eq=False)
class _Request:
    document_id: str
    agent_id: str
    supersedes: Supersede | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    result: ClaimResult | None = None
    error: BaseException | None = None

    def answer(self, result: ClaimResult | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class ClaimBatcher:
    """``await claim(document, agent)``; :meth:`run` (a task that must be running)
    sends them in batches."""

    def __init__(
        self, store: Store, manager_id: str, host: str | None, metadata: dict[str, Any]
    ) -> None:
        self._store = store
        self._manager_id = manager_id
        self._host = host
        self._metadata = metadata
        self._pending: list[_Request] = []
        self._wanted = anyio.Event()
        #: Calls made (for tests and benchmarks).
        self.batches = 0

    async def claim(
        self, document_id: str, agent_id: str, supersedes: Supersede | None = None
    ) -> ClaimResult:
        """Claim ``document_id`` for ``agent_id`` (once :meth:`run` runs), ending
        ``supersedes`` in the same statement; raises the store's errors."""
        request = _Request(document_id, agent_id, supersedes)
        self._pending.append(request)
        self._wanted.set()
        try:
            await request.done.wait()
        except BaseException:
            if request in self._pending:  # cancelled before it was sent: never sent
                self._pending.remove(request)
            raise
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    async def run(self) -> None:
        """Send what has queued up, one call at a time, until cancelled."""
        try:
            while True:
                await self._wanted.wait()
                self._wanted = anyio.Event()
                while self._pending:
                    batch = self._pending[:MAX_BATCH]
                    del self._pending[:MAX_BATCH]
                    await self._send(batch)
        finally:
            for request in self._pending:
                request.answer(error=StoreUnavailable("the manager is stopping"))
            self._pending.clear()

    async def _send(self, batch: Sequence[_Request]) -> None:
        self.batches += 1
        try:
            results = await self._store.claim_documents(
                [(r.document_id, r.agent_id) for r in batch],
                self._manager_id,
                self._host,
                self._metadata,
                supersedes={r.agent_id: r.supersedes for r in batch if r.supersedes is not None},
            )
        except StoreUnavailable as exc:
            for request in batch:
                request.answer(error=exc)
            return
        except StoreError as exc:
            if len(batch) == 1:
                batch[0].answer(error=exc)
                return
            await self._one_by_one(batch)
            return
        except BaseException as exc:  # a bug or a cancel: nobody may wait forever
            for request in batch:
                request.answer(error=StoreUnavailable(f"claim not made: {exc!r}"))
            raise
        for request, result in zip(batch, results, strict=True):
            request.answer(result)

    async def _one_by_one(self, batch: Sequence[_Request]) -> None:
        for n, request in enumerate(batch):
            try:
                result = await self._store.claim_document(
                    request.document_id,
                    request.agent_id,
                    self._manager_id,
                    self._host,
                    self._metadata,
                    request.supersedes,
                )
            except StoreError as exc:
                request.answer(error=exc)
            except BaseException as exc:
                for rest in batch[n:]:
                    rest.answer(error=StoreUnavailable(f"claim not made: {exc!r}"))
                raise
            else:
                request.answer(result)
