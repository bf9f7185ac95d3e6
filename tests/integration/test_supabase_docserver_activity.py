"""The docserver's Supabase activity writer against the PostgREST double (real Postgres)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import psycopg
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from docserver.activity.supabase import SupabaseActivityWriter
from docserver.errors import ActivityKeyRefused
from tests.integration.supabase_doubles import SupabaseDouble, serve_supabase

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docserver_support import DocserverProcess
from ywebsocket_server import HumanClient

pytestmark = pytest.mark.anyio


@pytest.fixture
async def supabase(database_url: str) -> AsyncIterator[SupabaseDouble]:
    async with serve_supabase(database_url) as double:
        yield double
        assert double.unexpected == []


async def test_rows_in_order_active_documents_and_a_refused_row(
    supabase: SupabaseDouble, db: psycopg.Connection
) -> None:
    db.execute(
        "INSERT INTO document_activity (document_id, event_type) VALUES"
        " ('open', 'active'), ('closed', 'active'), ('closed', 'idle')"
    )
    writer = SupabaseActivityWriter(supabase.url, SecretStr(supabase.key))
    active: list[list[str]] = []
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda *, task_status: writer.run(
                on_active_documents=active.append, task_status=task_status
            )
        )
        writer.record("a", "active", 1)
        writer.record("x" * 600, "active", 1)  # refused by the CHECK: dropped alone, logged
        writer.record("a", "user_joined", 2)
        writer.record("a", "idle", 0)
        with anyio.fail_after(10):
            await writer.wait_drained()
        assert writer.pending == 0
        recent = await writer.recent_documents(limit=10)
        tg.cancel_scope.cancel()
    assert active == [["open"]]
    rows = db.execute(
        "SELECT document_id, event_type, user_count, metadata FROM document_activity"
        " WHERE id > 3 ORDER BY id"
    ).fetchall()
    assert rows == [
        ("a", "active", 1, {"source": "docserver"}),
        ("a", "user_joined", 2, {"source": "docserver"}),
        ("a", "idle", 0, {"source": "docserver"}),
    ]
    assert [r["document_id"] for r in recent] == ["a", "closed", "open"]
    assert recent[0]["last_event"] == "idle"


async def test_a_lone_refused_row_is_dropped_and_writing_goes_on(
    supabase: SupabaseDouble, db: psycopg.Connection
) -> None:
    writer = SupabaseActivityWriter(supabase.url, SecretStr(supabase.key))
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda *, task_status: writer.run(
                on_active_documents=lambda _docs: None, task_status=task_status
            )
        )
        with capture_logs() as logs:
            writer.record("x" * 600, "active", 1)  # alone in its batch; refused by the CHECK
            with anyio.fail_after(10):
                await writer.wait_drained()
        writer.record("after", "active", 1)
        with anyio.fail_after(10):
            await writer.wait_drained()
        tg.cancel_scope.cancel()
    refused = [e for e in logs if e["event"] == "activity_row_refused"]
    assert [e["row"]["document_id"] for e in refused] == ["x" * 600]
    assert db.execute("SELECT document_id FROM document_activity").fetchall() == [("after",)]


async def test_wrong_key_is_refused_at_start(supabase: SupabaseDouble) -> None:
    writer = SupabaseActivityWriter(supabase.url, SecretStr("not-the-key"))
    with anyio.fail_after(10), pytest.raises(ActivityKeyRefused) as error:
        await writer.run(on_active_documents=lambda _docs: None)
    assert "not-the-key" not in str(error.value)


async def test_docserver_process_writes_through_supabase(
    supabase: SupabaseDouble, db: psycopg.Connection, tmp_path: Path
) -> None:
    """`docagents docserver` with only SUPABASE_URL/KEY: rows and the documents list via REST."""
    server = DocserverProcess(
        tmp_path / "docserver",
        "",
        SUPABASE_URL=supabase.url,
        SUPABASE_SERVICE_KEY=supabase.key,
    )
    server.env.pop("DATABASE_URL")
    await server.start()
    try:
        ann = HumanClient(server.ws_url("via-rest"))
        async with ann.connected():
            with anyio.fail_after(15):
                while not db.execute(  # noqa: ASYNC110 (polling the database)
                    "SELECT 1 FROM document_activity WHERE document_id = 'via-rest'"
                    " AND event_type = 'active'"
                ).fetchone():
                    await anyio.sleep(0.05)
            async with httpx.AsyncClient() as client:
                listed = (await client.get(server.http + "/api/documents")).json()
            assert listed["documents"][0]["document_id"] == "via-rest"
        with anyio.fail_after(15):
            while not db.execute(  # noqa: ASYNC110
                "SELECT 1 FROM document_activity WHERE document_id = 'via-rest'"
                " AND event_type = 'idle'"
            ).fetchone():
                await anyio.sleep(0.05)
    finally:
        await server.stop()
    assert supabase.key not in server.log()


async def test_docserver_with_a_wrong_key_says_so(supabase: SupabaseDouble, tmp_path: Path) -> None:
    server = DocserverProcess(
        tmp_path / "docserver", "", SUPABASE_URL=supabase.url, SUPABASE_SERVICE_KEY="wrong-key"
    )
    server.env.pop("DATABASE_URL")
    with pytest.raises(RuntimeError, match="docserver exited"):
        await server.start()
    assert server.process is not None and server.process.returncode not in (0, None)
    assert "service_role key" in server.log()
    assert "wrong-key" not in server.log()


async def test_supabase_tokens_and_can_open_document_through_rest(
    supabase: SupabaseDouble, db: psycopg.Connection, tmp_path: Path
) -> None:
    """Supabase Auth tokens as they are (aud 'authenticated', SUPABASE_JWT_SECRET), and
    the operator's can_open_document() called through PostgREST's rpc."""
    import time

    import jwt
    from docserver_support import refusal

    db.execute(
        """
        CREATE OR REPLACE FUNCTION can_open_document(subject text, document_id text)
        RETURNS text LANGUAGE sql STABLE AS $$
            SELECT CASE WHEN document_id = 'secret' THEN 'denied' ELSE 'read-write' END
        $$
        """
    )
    jwt_secret = "supabase-jwt-secret-supabase-jwt-secret"
    server = DocserverProcess(
        tmp_path / "docserver",
        "",
        SUPABASE_URL=supabase.url,
        SUPABASE_SERVICE_KEY=supabase.key,
        SUPABASE_JWT_SECRET=jwt_secret,
        DOCSERVER_AUTH="jwt",
        DOCSERVER_AUTHZ="sql",
        DOCSERVER_JWT_AUDIENCE="authenticated",
    )
    server.env.pop("DATABASE_URL")
    claims = {
        "sub": "0b6f4e43-8d7b-4a4e-9a53-3f3d0d0f6f0a",
        "aud": "authenticated",
        "role": "authenticated",
        "exp": int(time.time()) + 600,
    }
    token = jwt.encode(claims, jwt_secret, algorithm="HS256")
    await server.start()
    try:
        assert (await refusal(server.ws_url("secret") + f"?token={token}"))[0] == 4403
        ann = HumanClient(server.ws_url("open") + f"?token={token}")
        async with ann.connected():
            pass
        assert supabase.rpc_calls("can_open_document") >= 2
    finally:
        await server.stop()
    connected = [
        line for line in server.log().splitlines() if '"event": "client_connected"' in line
    ]
    assert len(connected) == 1 and claims["sub"] in connected[0] and '"open"' in connected[0]
