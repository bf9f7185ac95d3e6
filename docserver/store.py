"""Where documents live between restarts: Y.js updates in one SQLite file.

Rooms write every client update *before* applying and relaying it
(:meth:`DocumentStore.write` returns once the update is committed, batched
with others off the event loop by one writer task), so nothing another client
has seen can be lost by a crash. Loading a document replays its updates, and
squashes them into one when there are many. Document ids are data in the file,
never file names. One SQLite connection, used by one thread at a time.

When a write fails (disk full, read-only file system) the store says so
(:attr:`DocumentStore.failure`; ``/healthz`` turns 503) and refuses further
writes at once until a probe write succeeds again (every ``probe_every_s``);
then ``on_recovered`` is called so rooms can ask their clients to resend what
was refused (y-websocket clients keep their local state).

    async with DocumentStore.open(path) as store:
        await store.write(document_id, update)  # raises DocumentStoreWriteFailed
        updates = await store.load(document_id)
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskStatus
from pycrdt import Doc

from docserver.errors import DocumentStoreOpenFailed, DocumentStoreWriteFailed

__all__ = ["DocumentStore"]

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS document_updates (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL,
    update_data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS document_updates_document_idx ON document_updates (document_id, seq);
CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, payload BLOB);
"""


@dataclass(eq=False)
class _Waiter:
    done: anyio.Event = field(default_factory=anyio.Event)
    error: str | None = None


class DocumentStore:
    def __init__(
        self, connection: sqlite3.Connection, *, squash_above: int, probe_every_s: float
    ) -> None:
        self._db = connection
        self._squash_above = squash_above
        self._probe_every_s = probe_every_s
        self._pending: list[tuple[str, bytes, _Waiter | None]] = []
        #: why the store cannot write, or None while it can
        self.failure: str | None = None
        self.on_recovered: Callable[[], None] | None = None
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, path: Path, *, squash_above: int = 200, probe_every_s: float = 1.0
    ) -> AsyncIterator[DocumentStore]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise DocumentStoreOpenFailed(f"cannot open the document store {path}: {exc}") from exc
        store = cls(connection, squash_above=squash_above, probe_every_s=probe_every_s)
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
        """Queue one update for writing, without waiting (kept and retried on failure)."""
        self._pending.append((document_id, update, None))
        self._wake.set()

    async def write(self, document_id: str, update: bytes) -> None:
        """Write one update and return once it is committed; DocumentStoreWriteFailed if not."""
        if self.failure is not None:
            raise DocumentStoreWriteFailed(self.failure)
        waiter = _Waiter()
        self._pending.append((document_id, update, waiter))
        self._wake.set()
        await waiter.done.wait()
        if waiter.error is not None:
            raise DocumentStoreWriteFailed(waiter.error)

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
            if self.failure is None:
                await self._wake.wait()
            else:  # retry (queued updates, or a probe) every probe_every_s
                await anyio.sleep(self._probe_every_s)
            self._wake = anyio.Event()
            if self.failure is not None and not self._pending:
                await self._probe()
            await self._write_pending()

    async def _probe(self) -> None:
        """While failing: try a small write; on success the store accepts writes again."""
        try:
            async with self._lock:
                await anyio.to_thread.run_sync(self._probe_sync, limiter=self._limiter)
        except sqlite3.Error:
            return
        self._recovered()

    def _recovered(self) -> None:
        log.warning("document_store_write_recovered", failure=self.failure)
        self.failure = None
        if self.on_recovered is not None:
            self.on_recovered()

    async def _write_pending(self) -> None:
        """Write what is queued; on failure stop (the run loop retries every probe_every_s)."""
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await anyio.to_thread.run_sync(self._write_sync, batch, limiter=self._limiter)
                except sqlite3.Error as exc:
                    self.failure = f"cannot write the document store: {exc}"
                    log.error(  # noqa: TRY400 (the reason is enough; it repeats)
                        "document_store_write_failed", error=str(exc), updates=len(batch)
                    )
                    self._fail_waiters(batch, self.failure)
                    return
                for _, _, waiter in batch:
                    if waiter is not None:
                        waiter.done.set()
                if self.failure is not None:
                    self._recovered()

    def _fail_waiters(self, batch: list[tuple[str, bytes, _Waiter | None]], error: str) -> None:
        """Tell the writers of ``batch`` it failed; keep queued ``append`` updates, in order."""
        kept = [entry for entry in batch if entry[2] is None]
        for _, _, waiter in batch:
            if waiter is not None:
                waiter.error = error
                waiter.done.set()
        self._pending[:0] = kept

    def _write_sync(self, batch: list[tuple[str, bytes, _Waiter | None]]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO document_updates (document_id, update_data) VALUES (?, ?)",
                [(document_id, update) for document_id, update, _ in batch],
            )

    def _probe_sync(self) -> None:
        with self._transaction():
            # room for a real edit, not just a reused page
            self._db.execute("INSERT INTO store_probe (payload) VALUES (zeroblob(65536))")
            self._db.execute("DELETE FROM store_probe")

    def _load_sync(self, document_id: str) -> list[bytes]:
        rows = self._db.execute(
            "SELECT seq, update_data FROM document_updates WHERE document_id = ? ORDER BY seq",
            (document_id,),
        ).fetchall()
        updates = [bytes(data) for _, data in rows]
        if len(updates) > self._squash_above:
            doc = Doc()
            for update in updates:
                try:
                    doc.apply_update(update)
                except ValueError:  # unreadable: the room logs and skips it too
                    continue
            squashed = doc.get_update()
            try:
                with self._transaction():
                    self._db.execute(
                        "DELETE FROM document_updates WHERE document_id = ? AND seq <= ?",
                        (document_id, rows[-1][0]),
                    )
                    self._db.execute(
                        "INSERT INTO document_updates (document_id, update_data) VALUES (?, ?)",
                        (document_id, squashed),
                    )
            except sqlite3.Error as exc:  # e.g. disk full: the updates stay as they are
                log.warning("document_squash_failed", document_id=document_id, error=str(exc))
                return updates
            log.info("document_squashed", document_id=document_id, updates=len(updates))
            updates = [squashed]
        return updates

    @contextlib.contextmanager
    def _transaction(self):  # type: ignore[no-untyped-def]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # a failed COMMIT (disk full) leaves it open
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise
