"""Rooms: persistence through unloading and a killed server; awareness for late joiners."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import anyio
import pytest
from docserver_support import YClient, running_docserver
from pycrdt import Text
from websockets.asyncio.client import connect

pytestmark = pytest.mark.anyio


def stored_updates(home: Path) -> int:
    with sqlite3.connect(home / "docserver" / "documents.sqlite3") as db:
        return db.execute("SELECT count(*) FROM document_updates").fetchone()[0]


async def test_document_survives_unloading_and_a_killed_server(
    tmp_path: Path, database_url: str
) -> None:
    async with running_docserver(
        tmp_path, database_url, DOCSERVER_ROOM_UNLOAD_AFTER_S="0"
    ) as server:
        url = server.ws_url("kept")
        async with YClient(url).connected() as ann:
            ann.doc["t"] = text = Text()
            text += "written once"
            with anyio.fail_after(10):  # the update reached the server before Ann leaves
                while stored_updates(tmp_path) < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        with anyio.fail_after(10):
            while (await server.health())["rooms"] != 0:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        async with YClient(url).connected() as bob:
            await bob.wait_for(lambda: str(bob.doc.get("t", type=Text)) == "written once")
            bob.doc.get("t", type=Text).insert(0, "Still ")
            with anyio.fail_after(10):
                while stored_updates(tmp_path) < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            await server.stop(signal.SIGKILL)
        await server.start()
        async with YClient(url).connected() as carol:
            await carol.wait_for(lambda: str(carol.doc.get("t", type=Text)) == "Still written once")


async def awareness_messages_with(url: str, needle: bytes, within: float = 5) -> bytes:
    async with connect(url) as websocket:
        with anyio.fail_after(within):
            while True:
                message = await websocket.recv()
                if isinstance(message, bytes) and message[:1] == b"\x01" and needle in message:
                    return message


async def test_late_joiner_sees_the_agent_already_present(
    tmp_path: Path, database_url: str
) -> None:
    async with running_docserver(tmp_path, database_url) as server:
        url = server.ws_url("late-joiner")
        async with YClient(url, agent=True).connected():
            await anyio.sleep(0.2)  # the agent has published its state, and stays quiet
            message = await awareness_messages_with(url, b"AI Agent")
            assert b'"type":"agent"' in message


async def test_abruptly_dropped_client_is_removed_from_awareness(
    tmp_path: Path, database_url: str
) -> None:
    async with running_docserver(tmp_path, database_url) as server:
        url = server.ws_url("vanish")
        async with connect(url) as watcher:
            async with YClient(url, name="Vanishing Val").connected() as val:
                with anyio.fail_after(5):
                    while b"Vanishing Val" not in await watcher.recv():
                        pass
                client_id = val.doc.client_id
                assert val.websocket is not None
                val.websocket.transport.abort()  # TCP reset, no awareness goodbye
            # the server tells the others that Val's state is gone (state "null")
            with anyio.fail_after(5):
                while True:
                    message = await watcher.recv()
                    if isinstance(message, bytes) and message[:1] == b"\x01" and b"null" in message:
                        break
        assert client_id
