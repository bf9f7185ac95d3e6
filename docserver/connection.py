"""One websocket connection as a pycrdt ``Channel`` over raw ASGI messages.

What it adds to pycrdt-websocket's ``ASGIWebsocket``: it checks each message's
framing before the room sees it (a broken one closes this connection only, with
1007), passes on only the awareness changes this connection may make (the room's
:class:`~docserver.awareness.AwarenessOwners` decides; the rest of a message is
dropped, and a message with nothing left is not relayed at all), tells the app
about every edit a person sends, slows a flooding client down with token buckets
on messages and on bytes (and yields to other tasks on every message, so one
busy client cannot starve other documents), and never raises on send: a peer
that vanished is just closed.

Bounds and access, before the room sees a message: an awareness state larger
than ``max_awareness_bytes`` closes the connection (4413); a read-only
connection's document updates are dropped (sync and awareness still work); every
other update passes the room's :class:`UpdateGate` first (which persists it
before it is applied and relayed, or refuses it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import structlog

from docserver.awareness import AwarenessOwners
from docserver.errors import MalformedMessage
from docserver.messages import AWARENESS, Inspection, encode_awareness_message, inspect_message
from docserver.ratelimit import TokenBucket

__all__ = ["TOO_LARGE_CLOSE_CODE", "Connection", "UpdateGate"]

log = structlog.get_logger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MALFORMED_CLOSE_CODE = 1007
UNSUPPORTED_CLOSE_CODE = 1003
#: An awareness state over its cap, or an update to a document at its size cap.
TOO_LARGE_CLOSE_CODE = 4413
_EMPTY_UPDATE = b"\x00\x00"


class UpdateGate(Protocol):
    async def admit(self, connection: Connection, update: bytes) -> bool:
        """True: let the room apply and relay the update; False: drop it."""
        ...


class Connection:
    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        document_id: str,
        role: str,
        bucket: TokenBucket,
        byte_bucket: TokenBucket | None = None,
        read_only: bool = False,
        max_awareness_bytes: int | None = None,
        subject: str | None = None,
    ) -> None:
        self._receive = receive
        self._send = send
        self.document_id = document_id
        self.role = role
        self._bucket = bucket
        self._byte_bucket = byte_bucket
        self.read_only = read_only
        self.subject = subject
        self._max_awareness_bytes = max_awareness_bytes
        #: set by the room that serves this connection
        self.gate: UpdateGate | None = None
        self.dropped_updates = 0
        self.closed = False
        self.close_code: int | None = None
        #: the room's owners of awareness client ids (set when the room is joined)
        self.awareness_owners: AwarenessOwners | None = None
        #: called for every update (an edit) this connection sends
        self.on_update: Callable[[], None] | None = None
        #: an agent life's fencing token (docserver.fencing), if its credential has one
        self.fence: int | None = None
        #: awaited once, when this connection first shows itself to the others: right
        #: after its first awareness update was relayed, or right before its first
        #: non-empty document update (a write) is handled. The app retires fenced
        #: agents there: people see the newcomer arrive before the old agent leaves,
        #: and the old one never writes after the newcomer did (make-before-break).
        self.on_first_visible: Callable[[], Awaitable[None]] | None = None
        self._after_relay: Callable[[], Awaitable[None]] | None = None

    @property
    def path(self) -> str:
        return self.document_id

    def __aiter__(self) -> Connection:
        return self

    async def __anext__(self) -> bytes:
        if self._after_relay is not None:  # the room has relayed the previous message
            after, self._after_relay = self._after_relay, None
            await after()
        while True:
            if self.closed:
                raise StopAsyncIteration
            event = await self._receive()
            kind = event["type"]
            if kind == "websocket.disconnect":
                self.closed = True
                self.close_code = event.get("code")
                raise StopAsyncIteration
            if kind != "websocket.receive":
                continue
            data = event.get("bytes")
            if data is None:
                await self.close(UNSUPPORTED_CLOSE_CODE, "y-websocket messages are binary")
                raise StopAsyncIteration
            try:
                inspection = inspect_message(data)
            except MalformedMessage as exc:
                await self.reject_malformed(exc, data)
                raise StopAsyncIteration from None
            if (
                self.on_first_visible is not None
                and inspection.update is not None
                and inspection.update != _EMPTY_UPDATE
            ):
                first, self.on_first_visible = self.on_first_visible, None
                await first()
            delay = self._bucket.take(anyio.current_time())
            if self._byte_bucket is not None:
                delay = max(delay, self._byte_bucket.take(anyio.current_time(), len(data)))
            if delay > 0:
                await anyio.sleep(delay)
            else:
                await anyio.lowlevel.checkpoint()
            if inspection.message_type == AWARENESS:
                if self._awareness_too_large(inspection):
                    await self.close(TOO_LARGE_CLOSE_CODE, "awareness state too large")
                    raise StopAsyncIteration
                if self.awareness_owners is None:
                    continue  # not in a room yet: nobody to tell
                entries = inspection.awareness
                accepted = self.awareness_owners.accept(self, entries, agent=self.role == "agent")
                if not accepted:
                    continue
                if len(accepted) != len(entries):
                    log.debug(
                        "awareness_entries_dropped",
                        document_id=self.document_id,
                        role=self.role,
                        dropped=[e.client_id for e in entries if e not in accepted],
                    )
                    data = encode_awareness_message(accepted)
            elif inspection.update is not None:
                if not await self._admit(inspection.update):
                    if self.closed:
                        raise StopAsyncIteration
                    continue
                if inspection.is_update and self.on_update is not None:
                    self.on_update()
            if self.on_first_visible is not None and inspection.message_type == AWARENESS:
                self._after_relay, self.on_first_visible = self.on_first_visible, None
            return data

    def _awareness_too_large(self, inspection: Inspection) -> bool:
        limit = self._max_awareness_bytes
        if limit is None:
            return False
        too_large = [e for e in inspection.awareness if e.state_bytes > limit]
        if too_large:
            log.warning(
                "awareness_state_too_large",
                document_id=self.document_id,
                role=self.role,
                size=max(e.state_bytes for e in too_large),
                limit=limit,
            )
        return bool(too_large)

    async def _admit(self, update: bytes) -> bool:
        if self.read_only:
            if update != _EMPTY_UPDATE:  # what a client with nothing new replies
                if self.dropped_updates == 0:
                    log.info(
                        "read_only_update_dropped", document_id=self.document_id, size=len(update)
                    )
                self.dropped_updates += 1
            return False
        if self.gate is None:
            return True
        return await self.gate.admit(self, update)

    async def send(self, message: bytes) -> None:
        if self.closed:
            return
        try:
            await self._send({"type": "websocket.send", "bytes": message})
        except (OSError, RuntimeError):
            # uvicorn's ClientDisconnected is an OSError; RuntimeError: sent after close
            self.closed = True

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        with contextlib.suppress(OSError, RuntimeError):  # already gone: nothing to close
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def reject_malformed(self, exc: Exception, message: bytes) -> None:
        log.warning(
            "malformed_message",
            document_id=self.document_id,
            role=self.role,
            error=str(exc) or type(exc).__name__,
            size=len(message),
            head=message[:16].hex(),
        )
        await self.close(MALFORMED_CLOSE_CODE, "malformed Y.js message")
