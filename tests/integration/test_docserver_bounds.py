"""What one client may cost: big messages, big awareness, a long id, a slow handshake,
many sockets, a document at its size cap; refused quickly, the room unaffected, RSS bounded."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import anyio
import psutil
import pytest
from docserver_support import YClient, refusal, running_docserver
from pycrdt import Doc, Text, create_awareness_message, create_update_message, write_var_uint
from websockets.asyncio.client import connect

pytestmark = pytest.mark.anyio

SMALL = {
    "DOCSERVER_MAX_MESSAGE_BYTES": str(64 * 1024),
    "DOCSERVER_MAX_AWARENESS_BYTES": "1024",
    "DOCSERVER_MAX_DOCUMENT_BYTES": str(200 * 1024),
    "DOCSERVER_HANDSHAKE_TIMEOUT_S": "1",
    "DOCSERVER_MAX_CONNECTIONS_PER_ADDRESS": "20",
}


def big_update(doc: Doc, size: int, char: str = "x") -> bytes:
    text = doc.get("t", type=Text)
    before = doc.get_state()
    text += char * size
    return doc.get_update(before)


async def raw_exchange(port: int, request: bytes, within: float = 10) -> bytes:
    """Send ``request`` on a raw socket; everything the server answers until it closes."""
    with anyio.fail_after(within):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request)
            received = b""
            try:
                while True:
                    received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
                return received


def upgrade_request(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def test_oversized_messages_are_refused_and_the_room_goes_on(
    tmp_path: Path, database_url: str
) -> None:
    async with running_docserver(tmp_path, database_url, **SMALL) as server:
        url = server.ws_url("bounded")
        async with (
            YClient(url, name="A").connected() as a,
            YClient(url, name="B").connected() as b,
        ):
            a.doc["t"] = Text()
            a.doc.get("t", type=Text).insert(0, "kept")
            await b.wait_for(lambda: str(b.doc.get("t", type=Text)) == "kept")

            attacker = Doc()
            attacker["t"] = Text()
            async with connect(url, max_size=None) as flooder:
                await flooder.send(create_update_message(big_update(attacker, 100 * 1024)))
                with anyio.fail_after(10):
                    await flooder.wait_closed()
                assert flooder.close_code == 1009

            raw = json.dumps({"user": {"name": "x" * 4096}}).encode()
            # one client (id 7), clock 1, then the state as a length-prefixed string
            awareness_update = b"\x01\x07\x01" + write_var_uint(len(raw)) + raw
            async with connect(url) as big_awareness:
                await big_awareness.send(create_awareness_message(awareness_update))
                with anyio.fail_after(10):
                    await big_awareness.wait_closed()
                assert (big_awareness.close_code, big_awareness.close_reason) == (
                    4413,
                    "awareness state too large",
                )

            # the room and its clients are unaffected
            a.doc.get("t", type=Text).insert(4, " going")
            await b.wait_for(lambda: str(b.doc.get("t", type=Text)) == "kept going")
        log = server.log()
        assert '"awareness_state_too_large"' in log


async def test_a_document_at_its_cap_becomes_read_only(tmp_path: Path, database_url: str) -> None:
    async with running_docserver(tmp_path, database_url, **SMALL) as server:
        url = server.ws_url("capped")
        filler = Doc()
        filler["t"] = Text()
        async with connect(url, max_size=None) as writer:
            for _ in range(3):  # 3 x 50 KB: under the 200 KB cap
                await writer.send(create_update_message(big_update(filler, 50 * 1024)))
            await writer.send(create_update_message(big_update(filler, 60 * 1024, "y")))
            with anyio.fail_after(10):
                await writer.wait_closed()
            assert writer.close_code == 4413
            assert "size cap" in writer.close_reason and "read-only" in writer.close_reason
        # what was there is untouched, and served to a newcomer
        async with YClient(url, name="N").connected() as newcomer:
            text = newcomer.doc.get("t", type=Text)
            await newcomer.wait_for(lambda: len(str(text)) == 150 * 1024)
            assert "y" not in str(text)
        assert '"document_at_size_cap"' in server.log()


async def test_a_10kb_document_id_is_answered_at_once(tmp_path: Path, database_url: str) -> None:
    async with running_docserver(tmp_path, database_url, **SMALL) as server:
        answer = await raw_exchange(
            server.port, upgrade_request("/parties/document/" + "a" * 10_000)
        )
        assert answer.startswith(b"HTTP/1.1 414 ")
        # a long-but-valid id still works, and the refusal of a too-long one is a close code
        code, reason = await refusal(server.ws_url("b" * 600))
        assert code == 4400 and "longer than 512" in reason
        async with YClient(server.ws_url("c" * 512)).connected():
            pass
        assert '"request_refused"' in server.log()


async def test_a_slow_handshake_is_cut_off(tmp_path: Path, database_url: str) -> None:
    async with running_docserver(tmp_path, database_url, **SMALL) as server:
        partial = upgrade_request("/parties/document/slow")[:40]
        answer = await raw_exchange(server.port, partial)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert '"handshake_timeout"' in server.log()
        async with YClient(server.ws_url("slow")).connected():
            pass


async def test_connections_per_address_are_limited(tmp_path: Path, database_url: str) -> None:
    # loopback is exempt by default (agents, a local proxy): count it here
    env = {
        **SMALL,
        "DOCSERVER_MAX_CONNECTIONS_PER_ADDRESS": "3",
        "DOCSERVER_CONNECTION_LIMIT_EXEMPT": "",
    }
    async with running_docserver(tmp_path, database_url, **env) as server:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        try:
            answer = await raw_exchange(server.port, upgrade_request("/parties/document/d"))
            assert answer.startswith(b"HTTP/1.1 429 ")
        finally:
            for sock in held:
                sock.close()
        with anyio.fail_after(10):  # the held sockets are forgotten once closed
            while True:
                try:
                    async with YClient(server.ws_url("d")).connected():
                        break
                except Exception:
                    await anyio.sleep(0.1)


async def test_many_large_updates_leave_rss_bounded(tmp_path: Path, database_url: str) -> None:
    env = {
        **SMALL,
        "DOCSERVER_MAX_MESSAGE_BYTES": str(1024 * 1024),
        "DOCSERVER_MAX_DOCUMENT_BYTES": str(4 * 1024 * 1024),
    }
    async with running_docserver(tmp_path, database_url, **env) as server:
        assert server.process is not None
        process = psutil.Process(server.process.pid)
        attacker = Doc()
        attacker["t"] = Text()
        codes = []
        for attempt in range(8):  # each a 2 MB update: over the message cap
            async with connect(server.ws_url(f"rss-{attempt}"), max_size=None) as flooder:
                await flooder.send(create_update_message(big_update(attacker, 2 * 1024 * 1024)))
                with anyio.fail_after(10):
                    await flooder.wait_closed()
                codes.append(flooder.close_code)
        filler = Doc()
        filler["t"] = Text()
        async with connect(server.ws_url("rss-fill"), max_size=None) as writer:
            for _ in range(12):  # 12 x 900 KB against a 4 MB cap: stops at the cap
                await writer.send(create_update_message(big_update(filler, 900 * 1024)))
            with anyio.fail_after(20):
                await writer.wait_closed()
            codes.append(writer.close_code)
        assert codes == [1009] * 8 + [4413]
        rss_mb = process.memory_info().rss / 1e6
        print(f"docserver RSS after the attack: {rss_mb:.0f} MB")
        assert rss_mb < 250, rss_mb
        stored = (tmp_path / "docserver" / "documents.sqlite3").stat().st_size
        assert stored < 8 * 1024 * 1024
