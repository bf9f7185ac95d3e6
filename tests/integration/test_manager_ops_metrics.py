"""Prometheus ``/metrics`` after a full-stack run agrees with the database.

Real docserver process, the manager in-process with real forkserver workers
using the LLM extractor against a local OpenAI-compatible server, pycrdt
clients playing the people in the editor, real Postgres. After the run the
counters scraped over HTTP are compared with the rows the run left.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from docserver_support import AGENT_TOKEN, DocserverProcess
from manager_support import running_manager, type_chars
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row
from ywebsocket_server import HumanClient

from manager.config import Settings
from tests.integration.openai_double import OpenAIDouble, places, serve

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MANAGER_ID = "metrics-manager"


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


async def until(predicate: Any, within: float = 20.0) -> Any:
    with anyio.fail_after(within):
        while not (value := predicate()):  # noqa: ASYNC110 (polling the database)
            await anyio.sleep(0.05)
    return value


def scrape(text: str) -> dict[str, float]:
    """Sample name (with labels for histogram buckets left out) -> value."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                samples[sample.name] = sample.value
    return samples


def database_figures(db: psycopg.Connection[dict[str, Any]]) -> dict[str, float]:
    lives = db.execute(
        "SELECT count(*) AS spawns, coalesce(sum(llm_calls_count), 0) AS llm_calls,"
        " coalesce(sum(locations_marked_count), 0) AS marked"
        " FROM agent_connections WHERE manager_id = %s",
        (MANAGER_ID,),
    ).fetchone()
    events = db.execute("SELECT count(*) AS n FROM document_activity").fetchone()
    assert lives is not None and events is not None
    return {
        "docagents_worker_spawns_total": lives["spawns"],
        "docagents_llm_calls_total": lives["llm_calls"],
        "docagents_locations_marked_total": lives["marked"],
        "docagents_activity_events_applied_total": events["n"],
    }


async def test_metrics_after_a_full_stack_run_match_the_database(
    database_url: str, db: psycopg.Connection[dict[str, Any]], tmp_path: Path
) -> None:
    reply = places(
        {"sentence_index": 0, "text": "Lisbon", "name": "Lisbon", "lat": 38.72, "lng": -9.14},
        {
            "sentence_index": 0,
            "text": "Copenhagen",
            "name": "Copenhagen",
            "lat": 55.68,
            "lng": 12.57,
        },
    )
    docserver = DocserverProcess(tmp_path / "docserver", database_url, idle_timeout_ms=500)
    await docserver.start()
    try:
        async with serve(OpenAIDouble([reply])) as llm:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                database_url=None,
                supabase_url=None,
                supabase_service_key=None,
                manager_id=MANAGER_ID,
                ws_port=docserver.port,
                docserver_agent_token=AGENT_TOKEN,
                extractor="llm",
                openai_api_key="test-key",
                openai_base_url=llm.base_url,
                llm_model="test-model",
                metrics_interval_s=0.3,
                sentence_debounce_ms=50,
                flush_interval_s=0.1,
                ping_interval_s=0.5,
                ping_timeout_s=2.0,
                detach_grace_s=3.0,
                stats_interval_s=3600.0,
                metrics_port=0,
            )
            async with running_manager(settings, database_url) as daemon:
                base = f"http://127.0.0.1:{daemon.metrics_port}"
                async with httpx.AsyncClient() as http:
                    ann = HumanClient(docserver.ws_url("trip-1"))
                    bob = HumanClient(docserver.ws_url("trip-2"), name="Bob")
                    async with ann.connected(), bob.connected():
                        await until(
                            lambda: (
                                db.execute(
                                    "SELECT count(*) AS n FROM agent_connections"
                                    " WHERE status = 'active'"
                                ).fetchone()["n"]
                                == 2
                            )
                        )
                        during = scrape((await http.get(f"{base}/metrics")).text)
                        assert during["docagents_agents_running"] == 2
                        assert during["docagents_attach_latency_seconds_count"] == 2
                        (run,) = ann.add_paragraph("")
                        type_chars(run, "Next spring we fly from Lisbon to Copenhagen.")
                        await ann.wait_for(lambda: len(ann.marks()) == 2, within=20)
                    # Both left: after the docserver's grace, 'idle' -> detached.
                    await until(
                        lambda: (
                            db.execute(
                                "SELECT count(*) AS n FROM agent_connections"
                                " WHERE status = 'disconnected'"
                            ).fetchone()["n"]
                            == 2
                        )
                    )
                    await daemon.writer.flush()
                    expected = database_figures(db)
                    assert expected["docagents_locations_marked_total"] == 2
                    assert expected["docagents_llm_calls_total"] >= 1
                    assert expected["docagents_worker_spawns_total"] == 2

                    async def agree() -> dict[str, float]:
                        got = scrape((await http.get(f"{base}/metrics")).text)
                        return {k: got[k] for k in expected}

                    with anyio.fail_after(10):
                        while (got := await agree()) != database_figures(db):  # noqa: ASYNC110
                            await anyio.sleep(0.1)
                    assert got == database_figures(db)
                    final = scrape((await http.get(f"{base}/metrics")).text)
                    assert final["docagents_agents_running"] == 0
                    assert final["docagents_agents_waiting"] == 0
                    assert final["docagents_agents_capacity"] == 10
                    assert final["docagents_worker_crashes_total"] == 0
                    assert final["docagents_worker_restarts_total"] == 0
                    assert final["docagents_evictions_total"] == 0
                    assert final["docagents_attach_latency_seconds_count"] == 2
                    assert final["docagents_attach_latency_seconds_sum"] < 30
                    assert (
                        final["docagents_llm_latency_seconds_count"]
                        == final["docagents_llm_calls_total"]
                        == len(llm.requests)
                    )
                    health = await http.get(f"{base}/healthz")
                    assert health.status_code == 200
                    body = health.json()
                    assert body["healthy"] is True
                    assert body["database"] == "reachable"
                    assert body["event_loop"] == "responsive"
    finally:
        await docserver.stop()
