"""The whole stack: real docserver process, manager with real forkserver workers, real Postgres.

A pycrdt client plays the person in the editor: it opens a document, types a
sentence with two places, sees both marks arrive, and leaves; the agent is then
detached, and the database tells the same story.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from docserver_support import AGENT_TOKEN, DocserverProcess
from manager_support import running_manager, type_chars
from ywebsocket_server import HumanClient

from manager.config import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


async def until(predicate: Any, within: float = 20.0) -> Any:
    with anyio.fail_after(within):
        while not (value := predicate()):  # noqa: ASYNC110 (polling the database)
            await anyio.sleep(0.05)
    return value


async def test_open_type_two_places_marked_leave_detached(
    database_url: str, db: psycopg.Connection[dict[str, Any]], tmp_path: Path
) -> None:
    docserver = DocserverProcess(tmp_path / "docserver", database_url, idle_timeout_ms=500)
    await docserver.start()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        manager_id="e2e-manager",
        ws_port=docserver.port,
        docserver_agent_token=AGENT_TOKEN,
        extractor="gazetteer",
        metrics_interval_s=0.3,
        sentence_debounce_ms=50,
        flush_interval_s=0.1,
        ping_interval_s=0.5,
        ping_timeout_s=2.0,
        detach_grace_s=3.0,
        stats_interval_s=3600.0,
    )
    try:
        async with running_manager(settings, database_url):
            ann = HumanClient(docserver.ws_url("trip-1"))
            async with ann.connected():
                row = await until(
                    lambda: db.execute(
                        "SELECT * FROM agent_connections WHERE document_id = 'trip-1'"
                        " AND status = 'active'"
                    ).fetchone()
                )
                (run,) = ann.add_paragraph("")
                type_chars(run, "Next spring we fly from Lisbon to Copenhagen.")
                await ann.wait_for(lambda: len(ann.marks()) == 2, within=20)
                assert ann.marked_texts() == ["Lisbon", "Copenhagen"]
                await until(
                    lambda: (
                        db.execute(
                            "SELECT count(*) AS n FROM agent_metrics"
                            " WHERE agent_connection_id = %s",
                            (row["id"],),
                        ).fetchone()["n"]
                        >= 1
                    )
                )
            # The client left: after the docserver's grace, 'idle' -> detached.
            final = await until(
                lambda: db.execute(
                    "SELECT * FROM agent_connections WHERE id = %s AND status = 'disconnected'",
                    (row["id"],),
                ).fetchone()
            )
            assert final["error_message"] == "idle"
            assert final["locations_marked_count"] == 2
            assert final["disconnected_at"] is not None
            events = [
                r["event_type"]
                for r in db.execute(
                    "SELECT event_type FROM document_activity WHERE document_id = 'trip-1'"
                    " ORDER BY id"
                ).fetchall()
            ]
            assert events[0] == "active" and events[-1] == "idle"
            stats = db.execute("SELECT * FROM get_agent_system_stats()").fetchone()
            assert stats["total_agents"] == 0 and stats["unique_documents"] == 0
            assert stats["total_locations_marked"] == 2
            assert stats["total_llm_calls"] == 0  # the gazetteer extractor
            lives = db.execute("SELECT count(*) AS n FROM agent_connections").fetchone()["n"]
            assert lives == 1
    finally:
        await docserver.stop()
