"""The extraction memory's SQL (migration 0007) through both store backends.

Postgres directly, Supabase through the PostgREST double: the same functions answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from manager.store.base import Store
from manager.store.postgres import PostgresStore
from manager.store.supabase import SupabaseStore
from tests.integration.supabase_doubles import serve_supabase

pytestmark = pytest.mark.anyio

PARIS = {"text": "Paris", "name": "Paris, France", "lat": 48.8, "lng": 2.3, "coord_source": "x"}
V = "llm/test/p1"


def entry(key: str, status: str = "done", **fields: Any) -> dict[str, Any]:
    return {"key": key, "extractor": V, "status": status, "places": [], "attempts": 0, **fields}


@pytest.fixture(params=["postgres", "supabase"])
async def store(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Store]:
    if request.param == "postgres":
        pg = await PostgresStore.connect(database_url)
        try:
            yield pg
        finally:
            await pg.aclose()
        return
    async with serve_supabase(database_url) as double:
        sb = await SupabaseStore.connect(double.url, SecretStr(double.key))
        try:
            yield sb
        finally:
            await sb.aclose()
        assert double.unexpected == []


async def record(store: Store, document_id: str, entries: list[dict[str, Any]], **kw: Any) -> int:
    return await store.record_extractions(
        document_id,
        entries,
        kw.get("seen", []),
        kw.get("usage", {}),
        cap=kw.get("cap", 100),
        retention=kw.get("retention", timedelta(days=30)),
    )


async def test_memory_is_stored_loaded_and_a_done_result_never_goes_back(
    store: Store, db: psycopg.Connection
) -> None:
    usage = {"sentences_sent": 3, "cache_hits": 1, "prompt_tokens": 30, "failures": 1}
    stored = await record(
        store,
        "doc",
        [entry("a", places=[PARIS]), entry("b"), entry("c", "retry", attempts=2, error="HTTP 503")],
        usage={**usage, "pending": 1},
    )
    assert stored == 3
    # A stale 'retry' for a sentence already done is ignored.
    assert await record(store, "doc", [entry("a", "retry", attempts=1)]) == 0
    rows = {r["key"]: r for r in await store.load_extraction_memory("doc", 100)}
    assert set(rows) == {"a", "b", "c"}
    assert rows["a"]["status"] == "done" and rows["a"]["places"] == [PARIS]
    assert rows["b"]["places"] == []  # "no places" is remembered
    assert (rows["c"]["status"], rows["c"]["attempts"], rows["c"]["error"]) == (
        "retry",
        2,
        "HTTP 503",
    )
    assert await store.load_extraction_memory("other", 100) == []
    usage_row = db.execute(
        "SELECT sentences_sent, cache_hits, prompt_tokens, failures FROM extraction_usage_hourly"
        " WHERE document_id = 'doc'"
    ).fetchone()
    assert usage_row == (3, 1, 30, 1)
    state = db.execute(
        "SELECT pending, retrying, failed, remembered FROM document_extraction_state"
        " WHERE document_id = 'doc'"
    ).fetchone()
    assert state == (1, 1, 0, 2)
    stats = await store.extraction_stats()
    assert (stats.sentences_sent_1h, stats.cache_hits_1h, stats.failures_1h) == (3, 1, 1)
    assert (stats.failed, stats.remembered) == (0, 2)


async def test_memory_is_bounded_by_a_cap_and_a_retention(
    store: Store, db: psycopg.Connection
) -> None:
    await record(store, "doc", [entry(f"k{i}") for i in range(10)])
    db.execute(
        "UPDATE extraction_memory SET last_seen_at = now() - interval '40 days'"
        " WHERE sentence_key IN ('k0', 'k1', 'k2')"
    )
    db.execute(
        "UPDATE extraction_memory SET last_seen_at = now() - interval '5 days'"
        " WHERE sentence_key IN ('k3', 'k4')"
    )
    db.execute(
        "UPDATE extraction_memory SET last_seen_at = now() - interval '1 day'"
        " WHERE sentence_key = 'k5'"
    )
    # k3 is seen again; the next report prunes what was not seen for 30 days, and
    # keeps the 6 most recently seen.
    await record(store, "doc", [entry("new")], seen=["k3"], cap=6)
    keys = {r["key"] for r in await store.load_extraction_memory("doc", 100)}
    assert keys == {"new", "k3", "k6", "k7", "k8", "k9"}
    # Documents nobody opens any more: the global prune.
    await record(store, "quiet", [entry("q")])
    db.execute("UPDATE extraction_memory SET last_seen_at = now() - interval '40 days'")
    assert await store.prune_extraction_memory(timedelta(days=30), 1000) == 7
    assert await store.load_extraction_memory("quiet", 100) == []


def test_docagents_stats_shows_the_extraction_figures(
    database_url: str, db: psycopg.Connection
) -> None:
    import json
    import os
    import subprocess
    import sys

    db.execute(
        "SELECT record_extractions('doc', %s::jsonb, '[]'::jsonb, %s::jsonb)",
        (
            json.dumps([entry("a"), entry("b", "failed")]),
            json.dumps(
                {
                    "sentences_sent": 4,
                    "cache_hits": 7,
                    "prompt_tokens": 120,
                    "completion_tokens": 30,
                    "failures": 2,
                }
            ),
        ),
    )
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "warning"}

    def run(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "manager.cli", "stats", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    document = json.loads(run("--json"))
    assert document["extraction"] == {
        "sentences_sent_1h": 4,
        "cache_hits_1h": 7,
        "prompt_tokens_1h": 120,
        "completion_tokens_1h": 30,
        "failures_1h": 2,
        "pending": 0,
        "failed": 1,
        "remembered": 1,
    }
    box = run()
    lines = box.splitlines()
    assert any(line.startswith("| Memory hits (1 h):") and line.endswith(" 7 |") for line in lines)
    assert any(
        line.startswith("| Tokens in/out (1 h):") and "120 / 30" in line
        for line in box.splitlines()
    )
