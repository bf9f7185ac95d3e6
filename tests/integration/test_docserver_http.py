"""The docserver's HTTP side: editor page, static files, JSON routes (in-process server)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from docserver_support import YClient, free_port, wait_for_rows

from docserver.service import run
from docserver.settings import DocserverSettings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def base_url(tmp_path: Path, database_url: str) -> AsyncIterator[str]:
    settings = DocserverSettings(
        ws_port=0,
        docagents_home=tmp_path,
        idle_timeout_ms=50,
        party_name="pages",
        ydoc_fragment="body",
        _env_file=None,
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            functools.partial(run, settings, database_url=database_url, handle_signals=False)
        )
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


async def test_pages_static_files_and_config(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        for path in ("/", "/doc/x", "/doc/travel%20notes"):
            page = await client.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert '<div id="editor"' in page.text
        script = page.text.split('src="', 1)[1].split('"', 1)[0]
        asset = await client.get(script)
        assert asset.status_code == 200
        assert "javascript" in asset.headers["content-type"]
        assert "immutable" in asset.headers["cache-control"]
        config = await client.get("/api/config")
        assert config.json() == {"partyName": "pages", "fragment": "body", "auth": "none"}
        for path in ("/static/%2e%2e/app.py", "/static/../settings.py", "/nope", "/doc/"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.post("/api/config")).status_code == 405


async def test_documents_list(base_url: str, database_url: str) -> None:
    ws = base_url.replace("http", "ws")
    async with YClient(f"{ws}/parties/pages/first").connected():
        await wait_for_rows(database_url, "first", [("active", 1)])
    await wait_for_rows(database_url, "first", [("active", 1), ("idle", 0)])
    async with YClient(f"{ws}/second").connected():
        await wait_for_rows(database_url, "second", [("active", 1)])
        async with httpx.AsyncClient(base_url=base_url) as client:
            body = (await client.get("/api/documents")).json()
    rows = [(d["document_id"], d["last_event"], d["user_count"]) for d in body["documents"]]
    assert rows == [("second", "active", 1), ("first", "idle", 0)]
    assert all(isinstance(d["timestamp"], str) for d in body["documents"])


async def test_documents_list_without_database_is_503(tmp_path: Path) -> None:
    settings = DocserverSettings(ws_port=0, docagents_home=tmp_path, _env_file=None)
    unreachable = f"postgresql://x@127.0.0.1:{free_port()}/x"
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            functools.partial(run, settings, database_url=unreachable, handle_signals=False)
        )
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/api/documents")
        assert response.status_code == 503
        assert response.json() == {"error": "database unavailable"}
        tg.cancel_scope.cancel()
