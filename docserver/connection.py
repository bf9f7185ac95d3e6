"""One websocket connection as a pycrdt ``Channel`` over raw ASGI messages.

What it adds to pycrdt-websocket's ``ASGIWebsocket``: it checks each message's
framing before the room sees it (a broken one closes this connection only, with
1007), remembers which awareness client ids this connection controls (so they are
removed when it drops), slows a flooding client down with a token bucket (and
yields to other tasks on every message, so one busy client cannot starve other
documents), and never raises on send: a peer that vanished is just closed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import structlog

from docserver.messages import AWARENESS, MalformedMessage, inspect_message
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
        #: awareness client ids whose state came through this connection
        self.awareness_ids: set[int] = set()

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
            if inspection.message_type == AWARENESS:
                for entry in inspection.awareness:
                    if entry.present:
                        self.awareness_ids.add(entry.client_id)
                    else:
                        self.awareness_ids.discard(entry.client_id)
            delay = self._bucket.take(anyio.current_time())
            if delay > 0:
                await anyio.sleep(delay)
            else:
                await anyio.lowlevel.checkpoint()
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
