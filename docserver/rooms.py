"""The open documents: one pycrdt-websocket ``YRoom`` per document id.

A room is created on the first connection (its document replayed from the
:class:`~docserver.store.DocumentStore`), and is unloaded when nobody has been
connected for ``unload_after_s``. Rooms never vanish while a client is
connected (pycrdt-websocket's ``auto_clean_rooms`` behaviour is not used).

Every client update passes the room's gate (:meth:`DocumentRoom.admit`) before
the room applies and relays it: it must decode, it must fit under the
document's size cap (a document at its cap is read-only: a client adding to it
is closed with 4413, deletions still pass), and it is written to the store
first. When the store cannot write, updates are dropped, not applied or
relayed; once it writes again, the room asks every client for what it is
missing (a sync step 1), and y-websocket clients resend their edits.

Besides relaying, a room here:
- sends the current awareness states to a client that joins (so an editor sees
  the agent that is already present);
- keeps who owns which awareness client id (:class:`~docserver.awareness.AwarenessOwners`)
  and removes the states of a connection that drops without saying so;
- logs (and closes the connection of) messages it cannot apply.
"""

from __future__ import annotations

from logging import Logger, getLogger

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from pycrdt import Channel, Doc, create_awareness_message, create_sync_message
from pycrdt.websocket import YRoom

from docserver.awareness import AwarenessOwners
from docserver.connection import TOO_LARGE_CLOSE_CODE, Connection
from docserver.errors import DocumentStoreWriteFailed, MalformedMessage
from docserver.store import DocumentStore
from docserver.updates import Novelty, novelty

__all__ = ["DocumentRoom", "DocumentRooms"]

log = structlog.get_logger(__name__)
_stdlib_log = getLogger("docserver.yroom")


def _log_room_exception(exception: Exception, logger: Logger) -> bool:
    log.error("room_error", error=repr(exception), exc_info=exception)
    return True


class DocumentRoom(YRoom):
    def __init__(
        self,
        document_id: str,
        doc: Doc,
        *,
        store: DocumentStore,
        stored_bytes: int = 0,
        max_bytes: int | None = None,
    ) -> None:
        super().__init__(
            ready=True, ydoc=doc, exception_handler=_log_room_exception, log=_stdlib_log
        )
        self.document_id = document_id
        self.connections = 0  # counted before serve(): guards unloading
        #: which connection speaks for which awareness client id
        self.awareness_owners = AwarenessOwners()
        self.on_message_error = self._message_error
        self._store = store
        #: bytes of this document's updates in the store (what the size cap counts)
        self.stored_bytes = stored_bytes
        self.max_bytes = max_bytes
        #: updates were dropped while the store could not write: ask clients again
        self.needs_resync = False

    async def serve(self, channel: Channel) -> None:
        if isinstance(channel, Connection):
            channel.gate = self
        await super().serve(channel)

    async def admit(self, connection: Connection, update: bytes) -> bool:
        """Decide on one client update before the room applies and relays it."""
        try:
            news = novelty(update, self.ydoc)
        except (ValueError, MalformedMessage) as exc:
            await connection.reject_malformed(exc, update)
            return False
        if news is Novelty.NOTHING:
            return True  # nothing to store; applying it changes nothing either
        if (
            news is Novelty.CONTENT
            and self.max_bytes is not None
            and self.stored_bytes + len(update) > self.max_bytes
        ):
            log.warning(
                "document_at_size_cap",
                document_id=self.document_id,
                stored_bytes=self.stored_bytes,
                update_bytes=len(update),
                max_bytes=self.max_bytes,
            )
            await connection.close(
                TOO_LARGE_CLOSE_CODE,
                f"document is at its size cap ({self.max_bytes} bytes) and is read-only",
            )
            return False
        try:
            await self._store.write(self.document_id, update)
        except DocumentStoreWriteFailed:
            if not self.needs_resync:
                log.warning("update_not_stored", document_id=self.document_id, size=len(update))
            self.needs_resync = True
            return False
        self.stored_bytes += len(update)
        return True

    async def resync(self) -> None:
        """Ask every client for what the room lacks (after updates were dropped)."""
        self.needs_resync = False
        message = create_sync_message(self.ydoc)
        for client in list(self.clients):
            await client.send(message)
        log.info("room_resync_requested", document_id=self.document_id, clients=len(self.clients))

    async def _message_error(self, exc: Exception, message: bytes, channel: Channel) -> bool:
        if isinstance(channel, Connection):
            await channel.reject_malformed(exc, message)
        else:
            log.warning("message_error", document_id=self.document_id, error=repr(exc))
        return True

    def awareness_message(self) -> bytes | None:
        """The awareness states (carets, names) of everyone in the room, as one message."""
        own = self.awareness.client_id
        ids = [cid for cid, state in self.awareness.states.items() if cid != own and state]
        if not ids:
            return None
        return create_awareness_message(self.awareness.encode_awareness_update(ids))

    def join(self, connection: Connection) -> None:
        """``connection`` may now introduce awareness client ids in this room."""
        connection.awareness_owners = self.awareness_owners

    def leave(self, connection: Connection) -> None:
        """Drop the states ``connection`` introduced; the room tells the other clients."""
        client_ids = self.awareness_owners.release(connection)
        known = [cid for cid in sorted(client_ids) if cid in self.awareness.states]
        if known and self._task_group is not None:
            self.awareness.remove_awareness_states(known, "local")


class DocumentRooms:
    def __init__(
        self,
        store: DocumentStore,
        *,
        unload_after_s: float,
        max_document_bytes: int | None = None,
    ) -> None:
        self._store = store
        self._unload_after_s = unload_after_s
        self._max_document_bytes = max_document_bytes
        self._rooms: dict[str, DocumentRoom] = {}
        self._loading: dict[str, anyio.Lock] = {}
        self._task_group: TaskGroup | None = None

    def __len__(self) -> int:
        return len(self._rooms)

    def get_loaded(self, document_id: str) -> DocumentRoom | None:
        return self._rooms.get(document_id)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if self._task_group is not None:
            raise RuntimeError("DocumentRooms.run() called twice")
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._task_group = None

    async def acquire(self, document_id: str) -> DocumentRoom:
        """The room of a document, loaded and started; pair with :meth:`release`."""
        room = self._rooms.get(document_id)
        if room is None:
            lock = self._loading.setdefault(document_id, anyio.Lock())
            async with lock:
                room = self._rooms.get(document_id)
                if room is None:
                    room = await self._load(document_id)
            if not lock.statistics().tasks_waiting:
                self._loading.pop(document_id, None)
        room.connections += 1
        return room

    def release(self, room: DocumentRoom) -> None:
        room.connections -= 1
        if room.connections == 0 and self._task_group is not None:
            self._task_group.start_soon(self._unload_later, room)

    async def _load(self, document_id: str) -> DocumentRoom:
        if self._task_group is None:
            raise RuntimeError("DocumentRooms is not running")
        doc: Doc = Doc()
        updates = await self._store.load(document_id)
        for update in updates:
            try:
                doc.apply_update(update)
            except ValueError as exc:  # stored before updates were checked: skip it
                log.error("stored_update_unreadable", document_id=document_id, error=str(exc))  # noqa: TRY400
        room = DocumentRoom(
            document_id,
            doc,
            store=self._store,
            stored_bytes=sum(len(update) for update in updates),
            max_bytes=self._max_document_bytes,
        )
        await self._task_group.start(room.start)
        self._rooms[document_id] = room
        log.info("room_loaded", document_id=document_id, stored_updates=len(updates))
        return room

    async def _unload_later(self, room: DocumentRoom) -> None:
        await anyio.sleep(self._unload_after_s)
        if room.connections or self._rooms.get(room.document_id) is not room:
            return
        del self._rooms[room.document_id]
        await room.stop()
        log.info("room_unloaded", document_id=room.document_id)

    def store_recovered(self) -> None:
        """The store writes again: rooms that dropped updates ask their clients to resend."""
        if self._task_group is None:
            return
        for room in list(self._rooms.values()):
            if room.needs_resync:
                self._task_group.start_soon(room.resync)
