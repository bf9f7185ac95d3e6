"""The open documents: one pycrdt-websocket ``YRoom`` per document id.

A room is created on the first connection (its document replayed from the
:class:`~docserver.store.DocumentStore`), persists every update it applies, and
is unloaded when nobody has been connected for ``unload_after_s`` (its content
is in the store by then). Rooms never vanish while a client is connected
(pycrdt-websocket's ``auto_clean_rooms`` behaviour is not used).

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
from pycrdt import Channel, Doc, Subscription, TransactionEvent, create_awareness_message
from pycrdt.websocket import YRoom

from docserver.awareness import AwarenessOwners
from docserver.connection import Connection
from docserver.store import DocumentStore

__all__ = ["DocumentRoom", "DocumentRooms"]

log = structlog.get_logger(__name__)
_stdlib_log = getLogger("docserver.yroom")


def _log_room_exception(exception: Exception, logger: Logger) -> bool:
    log.error("room_error", error=repr(exception), exc_info=exception)
    return True


class DocumentRoom(YRoom):
    def __init__(self, document_id: str, doc: Doc) -> None:
        super().__init__(
            ready=True, ydoc=doc, exception_handler=_log_room_exception, log=_stdlib_log
        )
        self.document_id = document_id
        self.connections = 0  # counted before serve(): guards unloading
        #: which connection speaks for which awareness client id
        self.awareness_owners = AwarenessOwners()
        self.persist_subscription: Subscription | None = None
        self.on_message_error = self._message_error

    async def _message_error(self, exc: Exception, message: bytes, channel: Channel) -> bool:
        if isinstance(channel, Connection):
            await channel.reject_malformed(exc, message)
        else:
            log.warning("message_error", document_id=self.document_id, error=repr(exc))
        return True

    def awareness_message(self) -> bytes | None:
        """The current presence of everyone in the room, as one awareness message."""
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
    def __init__(self, store: DocumentStore, *, unload_after_s: float) -> None:
        self._store = store
        self._unload_after_s = unload_after_s
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
            doc.apply_update(update)
        room = DocumentRoom(document_id, doc)

        def persist(event: TransactionEvent) -> None:
            self._store.append(document_id, event.update)

        room.persist_subscription = doc.observe(persist)
        await self._task_group.start(room.start)
        self._rooms[document_id] = room
        log.info("room_loaded", document_id=document_id, stored_updates=len(updates))
        return room

    async def _unload_later(self, room: DocumentRoom) -> None:
        await anyio.sleep(self._unload_after_s)
        if room.connections or self._rooms.get(room.document_id) is not room:
            return
        del self._rooms[room.document_id]
        if room.persist_subscription is not None:
            room.ydoc.unobserve(room.persist_subscription)
        await room.stop()
        log.info("room_unloaded", document_id=room.document_id)
