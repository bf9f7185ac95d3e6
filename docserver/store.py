"""Where documents live between restarts: Y.js updates in one SQLite file.

Every update a room's document emits is appended (batched, off the event loop,
by one writer task); loading a document replays its updates, and squashes them
into one when there are many. Document ids are data in the file, never file
names. One SQLite connection, used by one thread at a time.

    async with DocumentStore.open(path) as store:
        store.append(document_id, update)      # non-blocking
        updates = await store.load(document_id)
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskStatus
from pycrdt import Doc

__all__ = ["DocumentStore", "DocumentStoreError"]

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS document_updates (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL,
    update_data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS document_updates_document_idx ON document_updates (document_id, seq);
"""


class DocumentStoreError(Exception):
    """The document store file cannot be opened or written."""


class DocumentStore:
    def __init__(self, connection: sqlite3.Connection, *, squash_above: int) -> None:
        self._db = connection
        self._squash_above = squash_above
        self._pending: list[tuple[str, bytes]] = []
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, path: Path, *, squash_above: int = 200) -> AsyncIterator[DocumentStore]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise DocumentStoreError(f"cannot open the document store {path}: {exc}") from exc
        store = cls(connection, squash_above=squash_above)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(store._run)
                try:
                    yield store
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await store._write_pending()
                connection.close()
            log.info("document_store_closed", path=str(path))

    def append(self, document_id: str, update: bytes) -> None:
        """Queue one update for writing (the writer task batches them)."""
        self._pending.append((document_id, update))
        self._wake.set()

    async def load(self, document_id: str) -> list[bytes]:
        """Every stored update of a document, oldest first (after writing queued ones)."""
        await self._write_pending()
        async with self._lock:
            return await anyio.to_thread.run_sync(
                self._load_sync, document_id, limiter=self._limiter
            )

    async def _run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self._write_pending()

    async def _write_pending(self) -> None:
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await anyio.to_thread.run_sync(self._write_sync, batch, limiter=self._limiter)
                except sqlite3.Error:
                    # keep them, in order, ahead of anything queued meanwhile
                    self._pending[:0] = batch
                    log.exception("document_store_write_failed", pending=len(self._pending))
                    await anyio.sleep(1)

    def _write_sync(self, batch: list[tuple[str, bytes]]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO document_updates (document_id, update_data) VALUES (?, ?)", batch
            )

    def _load_sync(self, document_id: str) -> list[bytes]:
        rows = self._db.execute(
            "SELECT seq, update_data FROM document_updates WHERE document_id = ? ORDER BY seq",
            (document_id,),
        ).fetchall()
        updates = [bytes(data) for _, data in rows]
        if len(updates) > self._squash_above:
            doc = Doc()
            for update in updates:
                doc.apply_update(update)
            squashed = doc.get_update()
            with self._transaction():
                self._db.execute(
                    "DELETE FROM document_updates WHERE document_id = ? AND seq <= ?",
                    (document_id, rows[-1][0]),
                )
                self._db.execute(
                    "INSERT INTO document_updates (document_id, update_data) VALUES (?, ?)",
                    (document_id, squashed),
                )
            log.info("document_squashed", document_id=document_id, updates=len(updates))
            updates = [squashed]
        return updates

    @contextlib.contextmanager
    def _transaction(self):  # type: ignore[no-untyped-def]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
