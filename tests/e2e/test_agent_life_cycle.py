"""The agent is there exactly while people are, for every kind of client (issue 14).

The whole stack: a real docserver process, a real manager with real forkserver
workers (the gazetteer extractor), the embedded Postgres; people are plain Node
``y-websocket`` clients whose awareness state stays ``{}``, and, for the
presence list, Chromium pages of the editor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from docserver_support import AGENT_TOKEN, REPO, DocserverProcess
from manager_support import running_manager
from plain_client import plain_client
from psycopg.rows import dict_row

from manager.config import Settings
from manager.daemon.driver import ManagerDaemon

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.js]

GRACE_MS = 1000


def settings(docserver: DocserverProcess, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "manager_id": "life-cycle",
        "ws_port": docserver.port,
        "docserver_agent_token": AGENT_TOKEN,
        "extractor": "gazetteer",
        # What IDLE_TIMEOUT_MS used to set for the worker's own fallback too: now
        # the docserver's grace alone.
        "idle_timeout_ms": GRACE_MS,
        "sentence_debounce_ms": 50,
        "flush_interval_s": 0.1,
        "poll_interval_s": 0.5,
        "ping_interval_s": 1.0,
        "detach_grace_s": 3.0,
        "stats_interval_s": 3600.0,
        "claim_retry_s": 1.0,
        "warm_pool_size": 2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def stack(
    tmp_path: Path, database_url: str, **overrides: Any
) -> AsyncIterator[tuple[DocserverProcess, ManagerDaemon]]:
    docserver = DocserverProcess(
        tmp_path / "docserver",
        database_url,
        idle_timeout_ms=GRACE_MS,
        DOCSERVER_EDIT_ACTIVITY_INTERVAL_S="0.5",
    )
    await docserver.start()
    try:
        async with running_manager(settings(docserver, **overrides), database_url) as daemon:
            yield docserver, daemon
    finally:
        await docserver.stop()


@pytest.fixture
def db(database_url: str) -> Any:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def base(docserver: DocserverProcess) -> str:
    return f"ws://127.0.0.1:{docserver.port}/parties/document"


def lives(db: Any, document_id: str) -> list[dict[str, Any]]:
    return db.execute(
        "SELECT * FROM agent_connections WHERE document_id = %s ORDER BY connected_at",
        (document_id,),
    ).fetchall()


def active_life(db: Any, document_id: str) -> dict[str, Any] | None:
    rows = [r for r in lives(db, document_id) if r["status"] == "active"]
    return rows[0] if rows else None


def connected(docserver: DocserverProcess, document_id: str, role: str) -> bool:
    for line in docserver.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (
            entry.get("event") == "client_connected"
            and entry.get("document_id") == document_id
            and entry.get("role") == role
        ):
            return True
    return False


async def until(predicate: Any, within: float = 20.0) -> Any:
    with anyio.fail_after(within):
        while not (value := predicate()):  # noqa: ASYNC110 (polling the database)
            await anyio.sleep(0.05)
    return value


async def test_a_plain_client_keeps_its_agent_and_gets_marks(
    tmp_path: Path, database_url: str, db: Any
) -> None:
    """#1/#3: awareness ``{}`` for 3 x the grace, then a sentence: marked."""
    async with stack(tmp_path, database_url) as (docserver, _):
        async with plain_client(base(docserver), "plain-1") as person:
            await person.wait_for(lambda c: c.agent_present)
            await anyio.sleep(3 * GRACE_MS / 1000)
            assert person.agent_present
            await person.type("Next spring we drive from Vienna to Salzburg.")
            marks = await person.wait_for(lambda c: len(c.marks) == 2 and c.marks)
            assert [text for text, _ in marks] == ["Vienna", "Salzburg"]
            (life,) = lives(db, "plain-1")
            assert life["status"] == "active"
        # Everyone left: 'idle' after the grace, and the life ends as 'idle'.
        ended = await until(
            lambda: [r for r in lives(db, "plain-1") if r["status"] == "disconnected"]
        )
        assert ended[0]["error_message"] == "idle"


async def test_the_agent_stays_visible_when_a_person_leaves(
    tmp_path: Path, database_url: str
) -> None:
    """#2: y-websocket clients re-send the agent's awareness; the docserver must not
    give it to them, or forget it when they leave. A forged removal is dropped."""
    async with stack(tmp_path, database_url) as (docserver, _):
        stays_open = plain_client(base(docserver), "two-tabs")
        async with stays_open as stays:
            await stays.wait_for(lambda c: c.agent_present)
            async with plain_client(base(docserver), "two-tabs") as leaves:
                await leaves.wait_for(lambda c: c.agent_present)
                await anyio.sleep(0.5)  # each has re-sent what it received by now
            await stays.send("forge-remove")
            await stays.wait_for(lambda c: any(e["event"] == "forged" for e in c.events))
            watched_from = len(stays.events)
            for _ in range(50):  # every 100 ms for 5 s
                assert stays.agent_present
                await anyio.sleep(0.1)
            assert not [e for e in stays.events[watched_from:] if e["event"] == "agent"]
            async with plain_client(base(docserver), "two-tabs") as newcomer:
                # present in the very first awareness message it receives
                await newcomer.wait_for(lambda c: c.agent_present, within=1.0)


async def test_coming_back_at_the_edge_of_the_grace_always_finds_an_agent(
    tmp_path: Path, database_url: str, db: Any
) -> None:
    """#4: leave and return at grace - 100 ms, grace, grace + 100 ms, 10 times each:
    2 s after returning the person has an agent (the old one, or a new one)."""
    async with stack(tmp_path, database_url) as (docserver, _):
        async with plain_client(base(docserver), "edge") as person:
            await person.wait_for(lambda c: c.agent_present)
        for offset_ms in [-100, 0, 100] * 10:
            await anyio.sleep((GRACE_MS + offset_ms) / 1000)
            returned = time.monotonic()
            async with plain_client(base(docserver), "edge") as person:
                await anyio.sleep(max(0.0, 2.0 - (time.monotonic() - returned)))
                assert person.agent_present, (offset_ms, person.agent_changes())
                assert active_life(db, "edge") is not None, offset_ms


async def test_people_typing_in_a_waiting_document_are_served_first(
    tmp_path: Path, database_url: str, db: Any
) -> None:
    """#7 with MAX_CONCURRENT_AGENTS=2: the order is recency of people at work.

    a and b get agents; c opens later and evicts the least recent (a). People in b
    and c do not type; the person in a types: the docserver writes an 'edit' row
    for a (no agent there), a becomes the most recent and evicts b (the least
    recent), and the sentence typed meanwhile is marked.
    """
    async with (
        stack(tmp_path, database_url, max_concurrent_agents=2, min_residency_s=0.5) as (
            docserver,
            _,
        ),
        plain_client(base(docserver), "wait-a") as a,
        plain_client(base(docserver), "wait-b") as b,
    ):
        await a.wait_for(lambda c: c.agent_present)
        await b.wait_for(lambda c: c.agent_present)
        await anyio.sleep(1.0)  # past the residency
        async with plain_client(base(docserver), "wait-c") as c:
            await c.wait_for(lambda c: c.agent_present)
            await a.wait_for(lambda c: not c.agent_present)
            assert lives(db, "wait-a")[-1]["error_message"] == "evicted"
            await anyio.sleep(1.0)
            await a.type("We take the train from Lyon to Marseille.")
            await a.wait_for(lambda c: c.agent_present, within=10)
            await a.wait_for(lambda c: len(c.marks) == 2, within=10)
            assert lives(db, "wait-b")[-1]["error_message"] == "evicted"
            assert active_life(db, "wait-c") is not None
            edits = db.execute(
                "SELECT count(*) AS n FROM document_activity WHERE document_id = 'wait-a'"
                " AND metadata->>'reason' = 'edit'"
            ).fetchone()["n"]
            assert edits >= 1


async def test_docagents_worker_joins_as_an_agent_not_a_person(
    tmp_path: Path, database_url: str, db: Any
) -> None:
    """#5: the debugging command reads the token `docagents up` keeps under
    DOCAGENTS_HOME; the docserver writes no 'active' and no second agent starts."""
    async with stack(tmp_path, database_url) as (docserver, daemon):
        home = tmp_path / "home"
        home.mkdir()
        (home / "agent-token").write_text(AGENT_TOKEN + "\n")
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DOCSERVER_AGENT_TOKEN", "DATABASE_URL")
        }
        env.update(
            {
                "DOCAGENTS_HOME": str(home),
                "WS_PORT": str(docserver.port),
                "EXTRACTOR": "gazetteer",
                "PYTHONPATH": str(REPO),
            }
        )
        worker = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "manager.cli", "worker", "debug-doc"],
            env=env,
            cwd=home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            await until(lambda: connected(docserver, "debug-doc", "agent"))
            await anyio.sleep(1.5)  # what a 'human' join would have caused by now
            rows = db.execute(
                "SELECT * FROM document_activity WHERE document_id = 'debug-doc'"
            ).fetchall()
            assert rows == []
            assert lives(db, "debug-doc") == []
            assert daemon.supervisor.lives == 0
        finally:
            worker.terminate()
            output = worker.communicate(timeout=10)[0].decode(errors="replace")
        assert "worker_started" in output

        # Without any credential it refuses to join at all (78), rather than as a person.
        (home / "agent-token").unlink()
        refused = await anyio.run_process(
            [sys.executable, "-m", "manager.cli", "worker", "debug-doc"],
            env=env,
            cwd=home,
            check=False,
        )
        assert refused.returncode == 78
        assert b"DOCSERVER_AGENT_TOKEN" in refused.stderr


@pytest.mark.browser
async def test_two_editor_tabs_one_closes_the_other_still_shows_the_agent(
    tmp_path: Path, database_url: str
) -> None:
    """#2 in the real editor: TipTap + y-websocket in Chromium, with carets."""
    from playwright.async_api import async_playwright
    from test_browser_editor import CHROMIUM, CHROMIUM_ARGS

    agent_item = "#presence li.agent:text-is('AI Agent')"
    async with stack(tmp_path, database_url) as (docserver, _), async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            first = await (await browser.new_context()).new_page()
            second = await (await browser.new_context()).new_page()
            for page in (first, second):
                await page.goto(f"http://127.0.0.1:{docserver.port}/doc/tabs")
                await page.wait_for_selector(agent_item, timeout=10_000)
            await second.close()
            for _ in range(50):  # every 100 ms for 5 s
                assert await first.locator(agent_item).count() == 1
                await anyio.sleep(0.1)
            third = await (await browser.new_context()).new_page()
            await third.goto(f"http://127.0.0.1:{docserver.port}/doc/tabs")
            await third.wait_for_selector("#editor .ProseMirror", timeout=10_000)
            await third.wait_for_selector(agent_item, timeout=1_000)
        finally:
            await browser.close()
