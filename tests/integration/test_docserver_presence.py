"""Human presence -> document_activity rows, against a real docserver process."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from docserver_support import (
    AGENT_HEADER,
    YClient,
    activity_rows,
    running_docserver,
    wait_for_rows,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.anyio


async def test_first_human_active_second_no_row_last_leaves_idle(
    tmp_path: Path, database_url: str
) -> None:
    async with running_docserver(tmp_path, database_url) as server:
        url = server.ws_url("notes")
        async with YClient(url, name="Ann").connected():
            await wait_for_rows(database_url, "notes", [("active", 1)])
            async with YClient(url, name="Bob").connected():
                async with YClient(url, agent=True).connected():
                    health = await server.health()
                    assert health["connections"] == 3
                # the second human and the agent changed nothing
                assert activity_rows(database_url, "notes") == [("notes", "active", 1)]
            assert activity_rows(database_url, "notes") == [("notes", "active", 1)]
        await wait_for_rows(database_url, "notes", [("active", 1), ("idle", 0)])


async def test_agent_connection_is_never_counted(tmp_path: Path, database_url: str) -> None:
    async with running_docserver(tmp_path, database_url) as server:
        async with YClient(server.ws_url("agent-only"), agent=True).connected() as agent:
            agent.doc  # noqa: B018
            # a human elsewhere afterwards: rows are written in order, so had the agent
            # been counted its 'active' row would be in the table before this one
            async with YClient(server.ws_url("elsewhere")).connected():
                await wait_for_rows(database_url, "elsewhere", [("active", 1)])
        async with YClient(server.ws_url("elsewhere2")).connected():
            await wait_for_rows(database_url, "elsewhere2", [("active", 1)])
        await wait_for_rows(database_url, "elsewhere", [("active", 1), ("idle", 0)])
        assert activity_rows(database_url, "agent-only") == []
        assert "bad agent token" not in server.log()


async def test_wrong_agent_token_is_refused_not_counted(tmp_path: Path, database_url: str) -> None:
    async with running_docserver(tmp_path, database_url) as server:
        async with connect(
            server.ws_url("doc"), additional_headers={AGENT_HEADER: "wrong"}
        ) as websocket:
            with pytest.raises(ConnectionClosed) as closed:
                await websocket.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
        assert closed.value.rcvd.reason == "invalid agent credential"
        assert activity_rows(database_url, "doc") == []


async def test_rejoin_within_grace_writes_no_idle(tmp_path: Path, database_url: str) -> None:
    async with running_docserver(tmp_path, database_url, idle_timeout_ms=1500) as server:
        url = server.ws_url("back-again")
        async with YClient(url).connected():
            await wait_for_rows(database_url, "back-again", [("active", 1)])
        async with YClient(url).connected():
            # stay past the original grace: the pending 'idle' was cancelled
            with anyio.move_on_after(2.5):
                await wait_for_rows(database_url, "back-again", [("active", 1), ("idle", 0)])
            assert activity_rows(database_url, "back-again") == [("back-again", "active", 1)]
        await wait_for_rows(database_url, "back-again", [("active", 1), ("idle", 0)])


HUMAN_SCRIPT = """
import asyncio, sys
from websockets.asyncio.client import connect

async def main():
    async with connect(sys.argv[1]) as ws:
        await ws.recv()
        print("connected", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_sigkilled_client_counts_as_leaving(tmp_path: Path, database_url: str) -> None:
    async with running_docserver(tmp_path, database_url) as server:
        client = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-c", HUMAN_SCRIPT, server.ws_url("killed")],
            stdout=subprocess.PIPE,
        )
        try:
            assert client.stdout is not None
            line = await anyio.to_thread.run_sync(client.stdout.readline)
            assert line.strip() == b"connected"
            await wait_for_rows(database_url, "killed", [("active", 1)])
            client.send_signal(signal.SIGKILL)
            await wait_for_rows(database_url, "killed", [("active", 1), ("idle", 0)])
        finally:
            client.kill()
            client.wait()
            assert client.stdout is not None
            client.stdout.close()
        assert (await server.health())["connections"] == 0
        assert "Exception in ASGI application" not in server.log()
        assert "Traceback" not in server.log()


async def test_restart_gives_stale_active_documents_their_idle(
    tmp_path: Path, database_url: str
) -> None:
    async with running_docserver(tmp_path, database_url) as server:
        async with YClient(server.ws_url("orphan")).connected():
            await wait_for_rows(database_url, "orphan", [("active", 1)])
            await server.stop(signal.SIGKILL)  # no chance to write anything
        await server.start()
        # nobody reconnects: 'idle' after the grace
        await wait_for_rows(database_url, "orphan", [("active", 1), ("idle", 0)])


async def test_join_and_leave_rows_when_enabled(tmp_path: Path, database_url: str) -> None:
    async with running_docserver(tmp_path, database_url, DOCSERVER_RECORD_JOINS="true") as server:
        url = server.ws_url("joins")
        async with YClient(url).connected(), YClient(url).connected():
            await wait_for_rows(
                database_url,
                "joins",
                [("active", 1), ("user_joined", 1), ("user_joined", 2)],
            )
        await wait_for_rows(
            database_url,
            "joins",
            [
                ("active", 1),
                ("user_joined", 1),
                ("user_joined", 2),
                ("user_left", 1),
                ("user_left", 0),
                ("idle", 0),
            ],
        )
