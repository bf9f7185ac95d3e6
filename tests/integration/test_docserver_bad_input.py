"""Bad input against a real docserver process: refused ids, malformed messages, floods."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from docserver_support import YClient, activity_rows, running_docserver, wait_for_rows
from pycrdt import Doc, Text, create_update_message
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.anyio

REFUSED = [
    ("/parties/document/", "invalid document id: is empty"),
    ("/parties/document/" + "x" * 513, "invalid document id: is longer than 512 characters"),
    ("/parties/document/a%2Fb", "invalid document id: contains '/'"),
    ("/parties/document/a/b", "invalid document id: contains '/'"),
    ("/parties/document/..", "invalid document id: contains '..'"),
    ("/parties/document/%2E%2E", "invalid document id: contains '..'"),
    ("/parties/document/a%00b", "invalid document id: contains control characters"),
    ("/parties/document/a%1Bb", "invalid document id: contains control characters"),
    ("/" + "%2E%2E%2F" * 3 + "etc%2Fpasswd", "invalid document id: contains '/'"),
    ("/parties/other/doc", "unknown party"),
]


async def close_of(url: str) -> tuple[int, str]:
    async with connect(url) as websocket:
        with anyio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
            while True:
                await websocket.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_refused_document_ids(tmp_path: Path, database_url: str) -> None:
    async with running_docserver(tmp_path, database_url) as server:
        base = f"ws://127.0.0.1:{server.port}"
        for path, reason in REFUSED:
            code, got = await close_of(base + path)
            assert (code, got) == (4404 if "party" in reason else 4400, reason), path
        # none of them reached the database, the rooms or the document store
        assert activity_rows(database_url) == []
        assert (await server.health())["rooms"] == 0
        with sqlite3.connect(tmp_path / "docserver" / "documents.sqlite3") as db:
            assert db.execute("SELECT count(*) FROM document_updates").fetchone() == (0,)
        assert sorted(p.name for p in (tmp_path / "docserver").iterdir()) == [
            "documents.sqlite3",
            "documents.sqlite3-shm",
            "documents.sqlite3-wal",
        ]
        # the longest allowed id works
        async with YClient(server.ws_url("y" * 512)).connected():
            await wait_for_rows(database_url, "y" * 512, [("active", 1)])


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x02\x05\x01\x02\x03\x04\x05",  # a sync update that is not a Y.js update
        b"\x00\x02\x09\x01",  # truncated
        b"\x01\x05\x01\x01\x01\x01{",  # awareness state that is not JSON
        b"",
    ],
)
async def test_malformed_message_closes_that_connection_only(
    tmp_path: Path, database_url: str, garbage: bytes
) -> None:
    async with running_docserver(tmp_path, database_url) as server:
        url = server.ws_url("shared")
        async with YClient(url, name="Ann").connected() as ann:
            ann.doc["t"] = text = Text()
            text += "before"
            async with connect(url) as bad:
                await bad.send(garbage)
                with anyio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await bad.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1007
            assert closed.value.rcvd.reason == "malformed Y.js message"
            # the room and the other client carry on
            async with YClient(url, name="Bob").connected() as bob:
                await bob.wait_for(lambda: str(bob.doc.get("t", type=Text)) == "before")
                bob.doc.get("t", type=Text).insert(6, " and after")
                await ann.wait_for(lambda: str(text) == "before and after")
        assert '"malformed_message"' in server.log()
        assert "Traceback" not in server.log()


async def test_text_frame_is_refused(tmp_path: Path, database_url: str) -> None:
    async with running_docserver(tmp_path, database_url) as server:
        async with connect(server.ws_url("texty")) as websocket:
            await websocket.send("hello")
            with anyio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                while True:
                    await websocket.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1003


async def test_flooding_client_does_not_stall_other_documents(
    tmp_path: Path, database_url: str
) -> None:
    async with running_docserver(
        tmp_path, database_url, DOCSERVER_MAX_MESSAGES_PER_S="200", DOCSERVER_MESSAGE_BURST="200"
    ) as server:
        flood_doc = Doc()
        flood_doc["t"] = flood_text = Text()
        updates = []
        for i in range(2000):
            before = flood_doc.get_state()
            flood_text += f"{i} "
            updates.append(create_update_message(flood_doc.get_update(before)))
        sent = 0
        async with connect(server.ws_url("flood")) as flooder, anyio.create_task_group() as tg:

            async def flood() -> None:
                nonlocal sent
                for message in updates:
                    await flooder.send(message)
                    sent += 1

            tg.start_soon(flood)
            with anyio.fail_after(3):
                while sent < 300:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            # meanwhile another document works normally, while the flood is still going
            calm = server.ws_url("calm")
            async with (
                YClient(calm, name="A").connected() as a,
                YClient(calm, name="B").connected() as b,
            ):
                a.doc["t"] = t = Text()
                t += "hi"
                await b.wait_for(lambda: str(b.doc.get("t", type=Text)) == "hi", within=5)
            # the flooded room is still working through the flood (slowed down, not stalled)
            async with YClient(server.ws_url("flood"), name="C").connected() as c:
                flooded = c.doc.get("t", type=Text)
                await c.wait_for(lambda: str(flooded).startswith("0 1 2 "))
                assert "1999 " not in str(flooded)
                await c.wait_for(lambda: "1999 " in str(flooded), within=60)
            tg.cancel_scope.cancel()
        await wait_for_rows(database_url, "calm", [("active", 1), ("idle", 0)])
