"""One websocket connection as a pycrdt ``Channel`` over raw ASGI messages.

What it adds to pycrdt-websocket's ``ASGIWebsocket``: it checks each message's
framing before the room sees it (a broken one closes this connection only, with
1007), passes on only the awareness changes this connection may make (the room's
:class:`~docserver.awareness.AwarenessOwners` decides; the rest of a message is
dropped, and a message with nothing left is not relayed at all), tells the app
about every edit a person sends, slows a flooding client down with a token bucket
(and yields to other tasks on every message, so one busy client cannot starve
other documents), and never raises on send: a peer that vanished is just closed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import structlog

from docserver.awareness import AwarenessOwners
from docserver.messages import (
    AWARENESS,
    MalformedMessage,
    encode_awareness_message,
    inspect_message,
)
from docserver.ratelimit import TokenBucket

__all__ = ["Connection"]

log = structlog.get_logger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MALFORMED_CLOSE_CODE = 1007
UNSUPPORTED_CLOSE_CODE = 1003


class Connection:
    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        document_id: str,
        role: str,
        bucket: TokenBucket,
    ) -> None:
        self._receive = receive
        self._send = send
        self.document_id = document_id
        self.role = role
        self._bucket = bucket
        self.closed = False
        self.close_code: int | None = None
        #: the room's owners of awareness client ids (set when the room is joined)
        self.awareness_owners: AwarenessOwners | None = None
        #: called for every update (an edit) this connection sends
        self.on_update: Callable[[], None] | None = None

    @property
    def path(self) -> str:
        return self.document_id

    def __aiter__(self) -> Connection:
        return self

    async def __anext__(self) -> bytes:
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
            delay = self._bucket.take(anyio.current_time())
            if delay > 0:
                await anyio.sleep(delay)
            else:
                await anyio.lowlevel.checkpoint()
            if inspection.is_update and self.on_update is not None:
                self.on_update()
            if inspection.message_type == AWARENESS:
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
            return data

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
