"""Test helpers: a real y-websocket server and a pycrdt client playing the human.

:class:`YServer` serves pycrdt-websocket rooms over ``websockets`` on 127.0.0.1.
Room documents live in :attr:`YServer.docs` and survive a stop/start, so a test
can take the server away and bring it back with the document intact (like a
server with persistence). :class:`HumanClient` is a deliberately separate client
(its own channel, no worker code) that edits like an editor would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
from pycrdt import (
    Awareness,
    Doc,
    Provider,
    XmlElement,
    XmlFragment,
    XmlText,
    create_awareness_message,
)
from pycrdt.websocket import WebsocketServer, YRoom
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class _Channel:
    """pycrdt Channel over either side of a ``websockets`` connection."""

    def __init__(self, websocket: ServerConnection | ClientConnection, path: str) -> None:
        self._websocket = websocket
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        with suppress(ConnectionClosed):
            await self._websocket.send(message)

    async def recv(self) -> bytes:
        while True:
            message = await self._websocket.recv(decode=False)
            if isinstance(message, bytes):
                return message


class YServer:
    def __init__(self) -> None:
        self.docs: dict[str, Doc] = {}
        self.port = 0
        self.handshake_headers: list[dict[str, str]] = []
        self.connections: list[ServerConnection] = []
        self.connected = anyio.Event()

    def url(self, path: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def doc(self, path: str) -> Doc:
        return self.docs.setdefault(path, Doc())

    @asynccontextmanager
    async def running(self) -> AsyncIterator[YServer]:
        async with WebsocketServer(auto_clean_rooms=False) as rooms:

            async def handler(websocket: ServerConnection) -> None:
                path = websocket.request.path
                self.handshake_headers.append(dict(websocket.request.headers.raw_items()))
                if path not in rooms.rooms:
                    rooms.rooms[path] = YRoom(ready=True, ydoc=self.doc(path))
                self.connections.append(websocket)
                self.connected.set()
                self.connected = anyio.Event()
                try:
                    await rooms.serve(_Channel(websocket, path))
                finally:
                    self.connections.remove(websocket)

            async with serve(handler, "127.0.0.1", self.port) as server:
                self.port = server.sockets[0].getsockname()[1]
                try:
                    yield self
                finally:
                    server.close()
                    for websocket in list(self.connections):
                        await websocket.close()
                for room in list(rooms.rooms.values()):
                    await room.stop()
                    # YRoom.stop() leaves its update streams open (ResourceWarning on GC).
                    room._update_send_stream.close()
                    room._update_receive_stream.close()

    async def send_raw(self, message: bytes, *, header: str) -> None:
        """Send bytes, as a broken server would, to clients whose handshake had ``header``."""
        for websocket in list(self.connections):
            if header in websocket.request.headers:
                await websocket.send(message)


class HumanClient:
    """A pycrdt client editing the document like a person in an editor."""

    def __init__(self, url: str, fragment: str = "prosemirror", name: str = "Ann") -> None:
        self.url = url
        self.doc = Doc()
        self.fragment = self.doc.get(fragment, type=XmlFragment)
        self.awareness = Awareness(self.doc)
        self.name = name
        self.awareness.set_local_state({"user": {"name": name, "color": "#f00"}})
        self._changed = anyio.Event()
        self.doc.observe(lambda _event: self._changed.set())

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[HumanClient]:
        async with connect(self.url, proxy=None) as websocket:
            channel = _Channel(websocket, self.url)
            async with Provider(self.doc, channel) as provider:
                update = self.awareness.encode_awareness_update([self.awareness.client_id])
                await channel.send(create_awareness_message(update))
                with anyio.fail_after(5):
                    await provider.synced.wait()
                yield self
                # Leave as y-websocket clients do: publish the null state.
                self.awareness.set_local_state(None)
                update = self.awareness.encode_awareness_update([self.awareness.client_id])
                await channel.send(create_awareness_message(update))
                self.awareness.set_local_state({"user": {"name": self.name, "color": "#f00"}})

    # --- editing ---------------------------------------------------------------

    def add_paragraph(self, *parts: str | None) -> list[XmlText]:
        """Append a paragraph; ``None`` parts are hard breaks. Returns its text runs."""
        with self.doc.transaction():
            paragraph = self.fragment.children.append(XmlElement("paragraph"))
            runs = []
            for part in parts:
                if part is None:
                    paragraph.children.append(XmlElement("hard_break"))
                else:
                    runs.append(paragraph.children.append(XmlText(part)))
        return runs

    def runs(self) -> list[XmlText]:
        out: list[XmlText] = []

        def walk(node: Any) -> None:
            for child in node.children:
                if isinstance(child, XmlText):
                    out.append(child)
                else:
                    walk(child)

        walk(self.fragment)
        return out

    def marks(self) -> list[tuple[str, dict[str, Any]]]:
        """Every marked span, in document order: (text, geoMark attrs)."""
        return [
            (chunk, attrs["geoMark"])
            for run in self.runs()
            for chunk, attrs in run.diff()
            if attrs and "geoMark" in attrs
        ]

    def marked_texts(self) -> list[str]:
        return [text for text, _ in self.marks()]

    def text(self) -> str:
        return "\n".join(
            "".join(c if isinstance(c, str) else "\ufffc" for c, _ in run.diff())
            for run in self.runs()
        )

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10) -> None:
        """Wait until ``predicate()`` holds, re-checking after every document change."""
        with anyio.fail_after(within):
            while not predicate():
                await self._changed.wait()
                self._changed = anyio.Event()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
