"""Retention through the store, in batches, keeping each document's latest event."""

from __future__ import annotations

import psycopg
import pytest

from manager.ops.retention import prune_once
from manager.store.postgres import PostgresStore
from tests.integration.lease_support import hold_lease

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _leases(database_url: str) -> None:
    """claim_document needs a valid lease."""
    hold_lease(database_url, "m")


async def test_prune_once_deletes_in_batches_and_keeps_latest(
    database_url: str, db: psycopg.Connection
) -> None:
    cid = db.execute("SELECT (connection).id FROM claim_document('d', 'a', 'm')").fetchone()
    assert cid is not None
    db.execute(
        "INSERT INTO agent_metrics (agent_connection_id, document_id, recorded_at) "
        "SELECT %s, 'd', now() - interval '10 days' FROM generate_series(1, 25)",
        [cid[0]],
    )
    db.execute(
        'INSERT INTO document_activity (document_id, event_type, "timestamp") '
        "SELECT 'doc-' || (g % 3), CASE WHEN g % 2 = 0 THEN 'active' ELSE 'idle' END,"
        " now() - interval '10 days' + g * interval '1 second' FROM generate_series(1, 30) g"
    )
    latest_before = db.execute(
        "SELECT DISTINCT ON (document_id) document_id, id FROM document_activity "
        "ORDER BY document_id, id DESC"
    ).fetchall()
    store = await PostgresStore.connect(database_url)
    try:
        deleted = await prune_once(store, days=7, batch=4, pause_s=0)
    finally:
        await store.aclose()
    assert deleted == (25, 27)
    assert db.execute("SELECT count(*) FROM agent_metrics").fetchone() == (0,)
    left = db.execute("SELECT document_id, id FROM document_activity ORDER BY 1").fetchall()
    assert left == sorted(latest_before)


async def test_prune_forgets_writers_not_heard_from(
    database_url: str, db: psycopg.Connection
) -> None:
    db.execute(
        "INSERT INTO metrics_writers (writer_id, last_batch, updated_at) VALUES"
        " (gen_random_uuid(), 5, now() - interval '10 days'), (gen_random_uuid(), 9, now())"
    )
    store = await PostgresStore.connect(database_url)
    try:
        await prune_once(store, days=7, pause_s=0)
    finally:
        await store.aclose()
    assert db.execute("SELECT last_batch FROM metrics_writers").fetchall() == [(9,)]
