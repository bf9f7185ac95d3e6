"""A ``pycrdt.Channel`` over a ``websockets`` client connection.

``pycrdt.Provider`` only understands sync messages (type 0), so the channel hands
it those and routes the rest itself: awareness (1) to
:class:`~worker.awareness.AgentAwareness`, y-websocket's awareness query (3) is
answered, auth (2) denials are logged. A
closed socket ends the iteration (the provider's receive loop then ends); sends on
a closed socket are dropped, the next connection's sync repairs the difference.
"""

from __future__ import annotations

import json

import structlog
from pycrdt import YMessageType, create_awareness_message, read_message
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from worker.awareness import AgentAwareness

__all__ = ["MESSAGE_AUTH", "MESSAGE_QUERY_AWARENESS", "WebsocketChannel"]

log = structlog.get_logger(__name__)

#: y-websocket message types beyond pycrdt's ``YMessageType``.
MESSAGE_AUTH = 2
MESSAGE_QUERY_AWARENESS = 3


class WebsocketChannel:
    def __init__(self, websocket: ClientConnection, path: str, awareness: AgentAwareness) -> None:
        self._websocket = websocket
        self._path = path
        self._awareness = awareness

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WebsocketChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        try:
            await self._websocket.send(message)
        except ConnectionClosed:
            log.debug("send_dropped_connection_closed", bytes=len(message))

    async def send_awareness(self, update: bytes) -> None:
        await self.send(create_awareness_message(update))

    async def recv(self) -> bytes:
        """The next sync message; other message types are handled here."""
        while True:
            message = await self._websocket.recv(decode=False)
            if not isinstance(message, bytes) or not message:
                log.warning("yjs_message_ignored", reason="not binary or empty")
                continue
            kind = message[0]
            if kind == YMessageType.SYNC:
                return message
            if kind == YMessageType.AWARENESS:
                self._apply_awareness(message)
            elif kind == MESSAGE_QUERY_AWARENESS:
                await self.send_awareness(self._awareness.full_update())
            elif kind == MESSAGE_AUTH:
                log.warning("yjs_auth_message", permission_denied=message[1:2] == b"\x00")
            else:
                log.warning("yjs_message_ignored", reason="unknown type", message_type=kind)

    def _apply_awareness(self, message: bytes) -> None:
        try:
            self._awareness.apply_remote(read_message(message[1:]))
        except (
            ValueError,
            IndexError,
            RuntimeError,
            AssertionError,
            UnicodeDecodeError,
            json.JSONDecodeError,
            KeyError,
            TypeError,
        ) as exc:
            log.warning("awareness_message_rejected", error=repr(exc), bytes=len(message))
