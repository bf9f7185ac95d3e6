"""Who may open a document: JWTs, read-only access, the SQL function, Origins, the bind check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import anyio
import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from docserver_support import AGENT_TOKEN, REPO, YClient, free_port, refusal, running_docserver
from pycrdt import Text, create_awareness_message
from websockets.asyncio.client import connect

from docserver.auth import JwtAuthenticator, mint_token, request_from_scope

pytestmark = pytest.mark.anyio

SECRET = "integration-secret-integration-secret"
AUDIENCE = "docagents-tests"
JWT_ENV = {
    "DOCSERVER_AUTH": "jwt",
    "DOCSERVER_JWT_SECRET": SECRET,
    "DOCSERVER_JWT_AUDIENCE": AUDIENCE,
}


def token(
    documents: list[str],
    *,
    read_only: bool = False,
    secret: str = SECRET,
    audience: str = AUDIENCE,
    age_s: float = 0,
    subject: str = "alice",
) -> str:
    return mint_token(
        secret=secret,
        subject=subject,
        documents=documents,
        read_only=read_only,
        ttl_s=600,
        audience=audience,
        now=time.time() - age_s,
    )


def with_token(url: str, value: str) -> str:
    return f"{url}?token={quote(value)}"


async def test_tokens_are_checked_and_documents_authorized(
    tmp_path: Path, database_url: str
) -> None:
    async with running_docserver(tmp_path, database_url, **JWT_ENV) as server:
        demo = server.ws_url("demo-1")
        refused = {
            "none": await refusal(demo),
            "bad signature": await refusal(with_token(demo, token(["*"], secret="x" * 40))),
            "expired": await refusal(with_token(demo, token(["*"], age_s=3600))),
            "wrong audience": await refusal(with_token(demo, token(["*"], audience="other"))),
        }
        assert {k: code for k, (code, _) in refused.items()} == dict.fromkeys(refused, 4401)
        assert refused["expired"][1] == "token expired"
        assert refused["wrong audience"][1] == "token has the wrong audience"
        assert refused["none"][1] == "authentication required: no token"

        alice = token(["demo-*"])
        assert await refusal(with_token(server.ws_url("other"), alice)) == (
            4403,
            "not allowed to open this document",
        )
        async with (
            YClient(with_token(demo, alice), name="A").connected() as a,
            YClient(  # the token as a subprotocol, as a browser can send it
                demo, name="B", subprotocols=["docagents", f"bearer.{alice}"]
            ).connected() as b,
        ):
            assert b.websocket is not None and b.websocket.subprotocol == "docagents"
            a.doc["t"] = text = Text()
            text += "hello"
            await b.wait_for(lambda: str(b.doc.get("t", type=Text)) == "hello")
        assert '"authentication_failed"' in server.log()


async def test_a_read_only_client_syncs_but_its_updates_go_nowhere(
    tmp_path: Path, database_url: str
) -> None:
    async with running_docserver(tmp_path, database_url, **JWT_ENV) as server:
        url = server.ws_url("demo-ro")
        writer_url = with_token(url, token(["demo-*"]))
        reader_url = with_token(url, token(["demo-*"], read_only=True, subject="rita"))
        async with (
            YClient(writer_url, name="W").connected() as w,
            YClient(reader_url, name="R").connected() as r,
        ):
            w.doc["t"] = text = Text()
            text += "from the writer"
            await r.wait_for(lambda: str(r.doc.get("t", type=Text)) == "from the writer")
            async with connect(writer_url) as watcher:
                r.doc.get("t", type=Text).insert(0, "READER ")
                # after its update, the reader says something on the same socket: once
                # that is relayed, the server has already handled (dropped) the update
                assert r.websocket is not None
                r.awareness.set_local_state({"user": {"name": "R"}, "marker": "after-edit"})
                await r.websocket.send(
                    create_awareness_message(r.awareness.encode_awareness_update([r.doc.client_id]))
                )
                with anyio.fail_after(10):
                    while True:
                        message = await watcher.recv()
                        if isinstance(message, bytes) and b"after-edit" in message:
                            break
            assert str(w.doc.get("t", type=Text)) == "from the writer"
        # a newcomer gets the stored document: no reader text either
        async with YClient(writer_url, name="N").connected() as n:
            await n.wait_for(lambda: str(n.doc.get("t", type=Text)) == "from the writer")
        assert '"read_only_update_dropped"' in server.log()


async def test_documents_list_is_filtered_and_needs_a_token(
    tmp_path: Path, database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as db:
        for document_id in ("demo-listed", "other-listed"):
            db.execute(
                "INSERT INTO document_activity (document_id, event_type, user_count) "
                "VALUES (%s, 'active', 1)",
                (document_id,),
            )
    async with (
        running_docserver(tmp_path, database_url, **JWT_ENV) as server,
        httpx.AsyncClient(base_url=server.http) as client,
    ):
        anonymous = await client.get("/api/documents")
        assert anonymous.status_code == 401
        listed = await client.get(
            "/api/documents", headers={"Authorization": f"Bearer {token(['demo-*'])}"}
        )
        assert listed.status_code == 200
        ids = {d["document_id"] for d in listed.json()["documents"]}
        assert ids == {"demo-listed"}
        config = (await client.get("/api/config")).json()
        assert config["auth"] == "token"


async def test_sql_function_decides_and_can_be_replaced(tmp_path: Path, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute(
            """
            CREATE OR REPLACE FUNCTION can_open_document(subject text, document_id text)
            RETURNS text LANGUAGE sql STABLE AS $$
                SELECT CASE
                    WHEN document_id LIKE 'team-%' AND subject = 'alice' THEN 'read-write'
                    WHEN document_id LIKE 'team-%' THEN 'read-only'
                    ELSE 'denied' END
            $$
            """
        )
    env = {**JWT_ENV, "DOCSERVER_AUTHZ": "sql"}
    async with running_docserver(tmp_path, database_url, **env) as server:
        no_claims = token([], subject="alice")  # the claims are not what decides here
        assert (await refusal(with_token(server.ws_url("private"), no_claims)))[0] == 4403
        url = server.ws_url("team-a")
        async with (
            YClient(with_token(url, no_claims), name="A").connected() as a,
            YClient(with_token(url, token([], subject="bob")), name="B").connected() as b,
        ):
            a.doc["t"] = text = Text()
            text += "alice writes"
            await b.wait_for(lambda: str(b.doc.get("t", type=Text)) == "alice writes")
        assert '"read_only": true' in server.log()


async def test_origins_outside_the_allow_list_are_refused(
    tmp_path: Path, database_url: str
) -> None:
    env = {"DOCSERVER_ALLOWED_ORIGINS": "https://app.example"}
    async with running_docserver(tmp_path, database_url, **env) as server:
        url = server.ws_url("o")
        assert await refusal(url, origin="http://evil.example") == (4403, "origin not allowed")
        async with YClient(url, headers={"Origin": "https://app.example"}).connected():
            pass
        same = f"http://127.0.0.1:{server.port}"
        async with YClient(url, headers={"Origin": same}).connected():
            pass
        # agents present their credential; they are not browsers
        async with YClient(url, agent=True).connected():
            pass
    assert AGENT_TOKEN


def _docserver(env: dict[str, str], home: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "manager.cli", "docserver"],
            cwd=home,
            env={**os.environ, "DOCAGENTS_HOME": str(home), "LOG_FORMAT": "json", **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def test_public_bind_without_authentication_exits_78(
    tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    base = {"DATABASE_URL": database_url, "WS_PORT": str(port), "DOCSERVER_HOST": "0.0.0.0"}
    log = tmp_path / "refused.log"
    refused = _docserver(base, tmp_path, log)
    assert refused.wait(timeout=60) == 78, log.read_text()
    assert "DOCSERVER_AUTH=none" in log.read_text()

    log = tmp_path / "started.log"
    started = _docserver({**base, **JWT_ENV}, tmp_path, log)
    try:
        with anyio.fail_after(30):
            async with httpx.AsyncClient() as client:
                while True:
                    assert started.poll() is None, log.read_text()
                    try:
                        response = await client.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                        if response.status_code == 200:
                            break
                    except httpx.TransportError:
                        await anyio.sleep(0.05)
    finally:
        started.terminate()
        started.wait(timeout=30)


class _Jwks(BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        return


@contextmanager
def jwks_server(body: bytes) -> Iterator[str]:
    handler = type("Handler", (_Jwks,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


async def test_es256_tokens_from_a_jwks_url() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": "k1", "use": "sig", "alg": "ES256"})
    with jwks_server(json.dumps({"keys": [public]}).encode()) as url:
        checker = JwtAuthenticator(jwks_url=url, issuer="https://issuer.example")
        claims = {"sub": "erin", "exp": int(time.time()) + 60, "iss": "https://issuer.example"}
        good = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})
        scope = {"query_string": f"token={good}".encode(), "headers": []}
        principal = await checker.authenticate(request_from_scope(scope))
        assert principal.subject == "erin"
        other = ec.generate_private_key(ec.SECP256R1())
        forged = jwt.encode(claims, other, algorithm="ES256", headers={"kid": "k1"})
        from docserver.auth import AuthFailed

        with pytest.raises(AuthFailed, match="signature"):
            await checker.authenticate(
                request_from_scope({"query_string": f"token={forged}".encode(), "headers": []})
            )
    assert REPO.exists()


async def test_docagents_token_mints_what_the_docserver_accepts(
    tmp_path: Path, database_url: str
) -> None:
    command = [sys.executable, "-m", "manager.cli", "token", "--sub", "alice", "--doc", "demo-*"]
    minted_run = await anyio.run_process(
        [*command, "--ttl", "1h"],
        cwd=tmp_path,
        env={**os.environ, **JWT_ENV, "DOCAGENTS_HOME": str(tmp_path)},
    )
    minted = minted_run.stdout.decode().strip()
    async with running_docserver(tmp_path, database_url, **JWT_ENV) as server:
        async with YClient(with_token(server.ws_url("demo-7"), minted)).connected():
            pass
        assert (await refusal(with_token(server.ws_url("elsewhere"), minted)))[0] == 4403
    secretless = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DOCSERVER_JWT_SECRET", "SUPABASE_JWT_SECRET")
    }
    missing = await anyio.run_process(
        command, cwd=tmp_path, env={**secretless, "DOCAGENTS_HOME": str(tmp_path)}, check=False
    )
    assert missing.returncode == 78


async def test_an_authentication_hook_decides(tmp_path: Path, database_url: str) -> None:
    env = {
        "DOCSERVER_AUTH": "auth_hook_example:authenticate",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO)]),
    }
    async with running_docserver(tmp_path, database_url, **env) as server:
        assert await refusal(with_token(server.ws_url("hook-1"), "nope")) == (4401, "hook says no")
        assert (await refusal(with_token(server.ws_url("other"), "let-me-in")))[0] == 4403
        async with YClient(with_token(server.ws_url("hook-1"), "let-me-in")).connected():
            pass
        assert '"subject": "hooked"' in server.log()
