"""Test helpers for the docserver: a real server process and pycrdt clients.

:class:`DocserverProcess` runs ``python -m manager.cli docserver`` with its own
``DOCAGENTS_HOME`` and port, and can be stopped (SIGTERM), killed or restarted
with the same data. :class:`YClient` is a pycrdt y-websocket client over the
``websockets`` library (optionally presenting the agent token).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import psycopg
from pycrdt import Awareness, Doc, Provider, create_awareness_message
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parents[2]
AGENT_TOKEN = "test-agent-token"
AGENT_HEADER = "X-Docagents-Agent-Token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DocserverProcess:
    def __init__(
        self, home: Path, database_url: str, *, idle_timeout_ms: int = 300, **env: str
    ) -> None:
        self.home = home
        self.port = free_port()
        self.log_path = home / "docserver.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DOCAGENTS_HOME": str(home),
            "WS_PORT": str(self.port),
            "IDLE_TIMEOUT_MS": str(idle_timeout_ms),
            "DOCSERVER_AGENT_TOKEN": AGENT_TOKEN,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, document_id: str, *, party: bool = True) -> str:
        path = (
            f"/parties/document/{quote(document_id, safe='')}"
            if party
            else f"/{quote(document_id, safe='')}"
        )
        return f"ws://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "manager.cli", "docserver"],
            cwd=self.home,  # no stray .env from the repository
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        with anyio.fail_after(30):
            async with httpx.AsyncClient() as client:
                while True:
                    if self.process.poll() is not None:
                        raise RuntimeError(f"docserver exited:\n{self.log()}")
                    try:
                        response = await client.get(self.http + "/healthz", timeout=1)
                        if response.status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.05)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        with anyio.fail_after(20):
            while self.process.poll() is None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return (await client.get(self.http + "/healthz")).json()


@asynccontextmanager
async def running_docserver(
    home: Path, database_url: str, **kwargs: Any
) -> AsyncIterator[DocserverProcess]:
    server = DocserverProcess(home, database_url, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            await server.stop()


class _Channel:
    def __init__(self, websocket: ClientConnection, path: str) -> None:
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
        message = await self._websocket.recv()
        return message if isinstance(message, bytes) else message.encode()


class YClient:
    """A pycrdt client in one document; ``agent=True`` presents the agent token."""

    def __init__(
        self,
        url: str,
        *,
        agent: bool = False,
        name: str = "Ann",
        headers: dict[str, str] | None = None,
        subprotocols: list[str] | None = None,
    ) -> None:
        self.url = url
        self.agent = agent
        self.name = name
        self.headers = headers or {}
        self.subprotocols = subprotocols
        self.doc: Doc = Doc()
        self.awareness = Awareness(self.doc)
        self.websocket: ClientConnection | None = None

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[YClient]:
        headers = {AGENT_HEADER: AGENT_TOKEN} if self.agent else {}
        async with connect(
            self.url,
            additional_headers={**headers, **self.headers},
            subprotocols=self.subprotocols,  # type: ignore[arg-type]
            max_size=None,
        ) as websocket:
            self.websocket = websocket
            channel = _Channel(websocket, self.url)
            async with Provider(self.doc, channel):
                state = {"user": {"name": self.name, "color": "#123456"}}
                if self.agent:
                    state = {"user": {"name": "AI Agent", "color": "#6b4eff"}, "type": "agent"}
                self.awareness.set_local_state(state)
                await channel.send(
                    create_awareness_message(
                        self.awareness.encode_awareness_update([self.doc.client_id])
                    )
                )
                yield self

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10) -> None:
        with anyio.fail_after(within):
            while not predicate():  # noqa: ASYNC110
                await anyio.sleep(0.02)


async def refusal(url: str, within: float = 10, **kwargs: Any) -> tuple[int, str]:
    """Connect, and return the (code, reason) the server closes with (fails if it does not)."""
    with anyio.fail_after(within):
        async with connect(url, max_size=None, **kwargs) as websocket:
            try:
                while True:
                    await websocket.recv()
            except ConnectionClosed as closed:
                assert closed.rcvd is not None, "closed without a close frame"
                return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("unreachable")


def activity_rows(database_url: str, document_id: str | None = None) -> list[tuple[str, str, int]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        if document_id is None:
            rows = conn.execute(
                "SELECT document_id, event_type, user_count FROM document_activity ORDER BY id"
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT document_id, event_type, user_count FROM document_activity "
                "WHERE document_id = %s ORDER BY id",
                (document_id,),
            ).fetchall()
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def wait_for_rows(
    database_url: str,
    document_id: str,
    expected: list[tuple[str, int]],
    within: float = 15,
) -> None:
    """Wait until the document's rows are exactly ``expected`` (event_type, user_count)."""
    rows: list[tuple[str, int]] = []
    with anyio.fail_after(within):
        while True:
            rows = [(e, c) for _, e, c in activity_rows(database_url, document_id)]
            if rows == expected:
                return
            if len(rows) > len(expected):
                raise AssertionError(f"rows {rows} != expected {expected}")
            await anyio.sleep(0.05)
