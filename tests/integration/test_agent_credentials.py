"""Agent credentials scoped to one life, and secrets kept out of every process's environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
import psutil
import psycopg
import pytest
from docserver_support import AGENT_HEADER, AGENT_TOKEN, YClient, free_port, refusal
from docserver_support import running_docserver as docserver
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pycrdt import Awareness, Doc, Text, create_awareness_message, read_message
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from docserver.agent_credentials import mint_agent_credential

pytestmark = pytest.mark.anyio


def credential(document_id: str, *, ttl_s: float = 600, master: str = AGENT_TOKEN) -> str:
    return mint_agent_credential(
        master, document_id=document_id, agent_id="agent-1", ttl_s=ttl_s, now=time.time()
    )


def fenced_credential(document_id: str, fence: int) -> dict[str, str]:
    """The header of a life's credential with fencing token ``fence``."""
    token = mint_agent_credential(
        AGENT_TOKEN,
        document_id=document_id,
        agent_id=f"agent-{fence}",
        ttl_s=600,
        now=time.time(),
        fence=fence,
    )
    return {AGENT_HEADER: token}


def agent_connection(url: str, headers: dict[str, str], **options: Any) -> Any:
    """A worker's DocumentConnection with a fast backoff (imported late: worker code)."""
    from pycrdt import Doc

    from worker.awareness import AgentAwareness
    from worker.backoff import Backoff
    from worker.connection import DocumentConnection

    doc = Doc()
    backoff = Backoff(initial_s=0.2, max_s=0.5)
    return DocumentConnection(
        doc, AgentAwareness(doc), url, headers=headers, backoff=backoff, **options
    )


async def test_a_life_credential_opens_its_document_once(tmp_path: Path, database_url: str) -> None:
    async with docserver(tmp_path, database_url) as server:
        mine = credential("doc-a")
        headers = {AGENT_HEADER: mine}
        async with YClient(server.ws_url("doc-a"), headers=headers, name="Agent").connected():
            # the same credential again, while its life is connected
            assert await refusal(server.ws_url("doc-a"), additional_headers=headers) == (
                4409,
                "agent credential already in use",
            )
        # another document, an expired one, one signed with another secret
        assert await refusal(server.ws_url("doc-b"), additional_headers=headers) == (
            4401,
            "agent credential is for another document",
        )
        expired = {AGENT_HEADER: credential("doc-a", ttl_s=-120)}
        assert (await refusal(server.ws_url("doc-a"), additional_headers=expired))[1] == (
            "agent credential expired"
        )
        forged = {AGENT_HEADER: credential("doc-a", master="not-the-master")}
        assert (await refusal(server.ws_url("doc-a"), additional_headers=forged))[0] == 4401
        # the life reconnects after a drop, and is still an agent, not a person
        async with (
            YClient(server.ws_url("doc-a"), headers=headers, name="Agent").connected() as agent,
            YClient(server.ws_url("doc-a"), name="Ann").connected() as ann,
        ):
            agent.doc["t"] = text = Text()
            text += "agent edit"
            await ann.wait_for(lambda: str(ann.doc.get("t", type=Text)) == "agent edit")
        log = server.log()
        assert '"role": "agent"' in log


def _with_password(url: str, password: str) -> str:
    params = conninfo_to_dict(url)
    params["password"] = password
    return make_conninfo(**params)


async def test_no_process_of_docagents_up_shows_a_secret(tmp_path: Path, database_url: str) -> None:
    secrets = {
        "password": "db-password-6c1f0e",
        "pgpassword": "pgpassword-92ab77",
        "service_key": "service-key-4d2e90",
        "master": "master-agent-secret-0aa4c3",
    }
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DATABASE_URL=_with_password(database_url, secrets["password"]),
        PGPASSWORD=secrets["pgpassword"],
        SUPABASE_URL="https://project.supabase.co",
        SUPABASE_SERVICE_KEY=secrets["service_key"],
        DOCSERVER_AGENT_TOKEN=secrets["master"],
        DOCAGENTS_HOME=str(tmp_path / "home"),
        WS_PORT=str(port),
        EXTRACTOR="gazetteer",
        MANAGER_ID="environ-test",
        WARM_POOL_SIZE="1",
        LOG_FORMAT="json",
    )
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "manager.cli", "up"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"ws://127.0.0.1:{port}/parties/document/environ"
        with anyio.fail_after(60):
            while True:
                assert up.poll() is None, log_path.read_text()
                try:
                    async with YClient(url).connected():
                        break
                except OSError:
                    await anyio.sleep(0.1)
        async with YClient(url, name="Ann").connected():
            with anyio.fail_after(60):  # the agent joined with its life's credential
                while not _agent_active(database_url):  # noqa: ASYNC110 (a database row)
                    await anyio.sleep(0.1)
            processes = [psutil.Process(up.pid), *psutil.Process(up.pid).children(recursive=True)]
            assert len(processes) >= 3  # up (manager), docserver, template, workers
            seen = []
            for process in processes:
                environ = _environ(process.pid)
                if environ is None:
                    continue
                seen.append(" ".join(process.cmdline())[:80])
                for name, value in secrets.items():
                    assert value.encode() not in environ, (name, process.cmdline())
            assert any("docserver" in line for line in seen), seen
        output = log_path.read_text()
        # the worker came with a credential for its life (it never had the master token)
        assert '"event": "agent_life_connected"' in output
    finally:
        up.send_signal(2)
        try:
            up.wait(timeout=40)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()


def _environ(pid: int) -> bytes | None:
    """The initial environment of a process, as the kernel shows it to others."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _agent_active(database_url: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as db:
        row = db.execute(
            "SELECT count(*) FROM agent_connections WHERE document_id = 'environ' "
            "AND status = 'active'"
        ).fetchone()
    return bool(row and row[0])


async def test_a_refused_credential_ends_the_connection_instead_of_retrying(
    tmp_path: Path, database_url: str
) -> None:
    from worker.errors import AccessRefused

    async with docserver(tmp_path, database_url) as server:
        connection = agent_connection(
            server.ws_url("doc-x"), {AGENT_HEADER: credential("doc-x", ttl_s=-120)}
        )
        with anyio.fail_after(20), pytest.raises(AccessRefused, match="expired"):
            await connection.run()


async def test_a_life_whose_stale_socket_is_still_open_retries_until_it_closes(
    tmp_path: Path, database_url: str
) -> None:
    """A worker that gave up on a slow handshake retries with the same credential
    while the server still holds that first socket: 4409 is retried, and the
    worker connects as soon as the server lets the stale socket go."""
    async with docserver(tmp_path, database_url) as server:
        url, headers = server.ws_url("doc-s"), {AGENT_HEADER: credential("doc-s")}
        synced = anyio.Event()
        connection = agent_connection(url, headers, on_synced=synced.set)
        async with anyio.create_task_group() as tg:
            async with connect(url, additional_headers=headers):  # the stale socket
                await tg.start(connection.run)
                await anyio.sleep(1.5)  # what must not happen meanwhile: a sync
                assert connection.sessions >= 2  # refused (4409) and retried
                assert not synced.is_set()
            with anyio.fail_after(10):
                await synced.wait()
            tg.cancel_scope.cancel()


async def test_a_credential_in_use_for_too_long_counts_as_refused(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.connection
    from worker.errors import CredentialInUse

    monkeypatch.setattr(worker.connection, "IN_USE_RETRY_S", 1.0)
    async with docserver(tmp_path, database_url) as server:
        url, headers = server.ws_url("doc-u"), {AGENT_HEADER: credential("doc-u")}
        connection = agent_connection(url, headers)
        async with connect(url, additional_headers=headers):  # someone else holds it
            with anyio.fail_after(20), pytest.raises(CredentialInUse, match="in use"):
                await connection.run()


async def test_a_newer_life_fences_the_older_one(tmp_path: Path, database_url: str) -> None:
    """Invariant 10: the docserver keeps the highest fencing token per document; an
    agent with a lower one is closed (4412) when the newer one connects, and cannot
    come back, so at most one agent writes to the document."""

    def fenced(fence: int) -> dict[str, str]:
        return fenced_credential("doc-f", fence)

    async with docserver(tmp_path, database_url) as server:
        url = server.ws_url("doc-f")
        newer = YClient(url, headers=fenced(7), name="Agent")
        async with connect(url, additional_headers=fenced(5)) as old, newer.connected() as new:
            with anyio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                while True:
                    await old.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4412
            assert "fenced" in closed.value.rcvd.reason
            # The old life reconnecting is refused; the new one keeps writing.
            assert (await refusal(url, additional_headers=fenced(5)))[0] == 4412
            new.doc["t"] = text = Text()
            text += "only the newer agent writes"
        log = server.log()
        assert '"agent_fenced"' in log


async def test_the_older_agent_stays_until_the_newer_one_shows_itself(
    tmp_path: Path, database_url: str
) -> None:
    """Make-before-break: a newer life that connected but has shown nothing yet does
    not retire the older agent; its first awareness update does, after it was relayed,
    so a person never sees the document without an agent."""

    def fenced(fence: int) -> dict[str, str]:
        return fenced_credential("doc-m", fence)

    def agent_awareness() -> tuple[int, bytes]:
        awareness = Awareness(Doc())
        awareness.set_local_state({"type": "agent"})
        update = awareness.encode_awareness_update([awareness.client_id])
        return awareness.client_id, create_awareness_message(update)

    seen: list[set[int]] = []  # the agents the person sees, after every awareness message
    closes: dict[str, int | None] = {}

    async def person_watches(websocket: Any) -> None:
        awareness = Awareness(Doc())
        async for message in websocket:
            if isinstance(message, bytes) and message[:1] == b"\x01":
                awareness.apply_awareness_update(read_message(message[1:]), "remote")
                seen.append(
                    {c for c, st in awareness.states.items() if st and st.get("type") == "agent"}
                )

    async def drain(name: str, websocket: Any) -> None:
        with suppress(ConnectionClosed):
            async for _ in websocket:
                pass
        closes[name] = websocket.close_code

    async with docserver(tmp_path, database_url) as server:
        url = server.ws_url("doc-m")
        old_id, old_hello = agent_awareness()
        new_id, new_hello = agent_awareness()
        async with (
            connect(url) as person,
            connect(url, additional_headers=fenced(5)) as old,
            connect(url, additional_headers=fenced(7)) as new,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(person_watches, person)
            tg.start_soon(drain, "old", old)
            await old.send(old_hello)
            with anyio.fail_after(10):
                while not (seen and old_id in seen[-1]):  # noqa: ASYNC110 (other tasks fill it)
                    await anyio.sleep(0.02)
            tg.start_soon(drain, "new", new)
            await anyio.sleep(1.0)  # the newer life is connected and silent
            assert "old" not in closes
            await new.send(new_hello)
            with anyio.fail_after(10):
                while "old" not in closes or not (seen and seen[-1] == {new_id}):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            assert closes["old"] == 4412
            first_seen = next(i for i, agents in enumerate(seen) if old_id in agents)
            assert all(seen[first_seen:]), seen  # never a moment without an agent
            tg.cancel_scope.cancel()
