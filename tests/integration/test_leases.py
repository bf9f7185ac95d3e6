"""Manager leases in the database (migrations/0010_manager_leases.sql), on both backends.

Every store call here goes through the real SQL functions: directly on Postgres,
and through the PostgREST double for Supabase.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from pydantic import SecretStr

from manager.errors import StoreError
from manager.store.base import Store
from manager.store.postgres import PostgresStore
from manager.store.supabase import SupabaseStore
from tests.integration.lease_support import expire_lease, hold_lease
from tests.integration.supabase_doubles import serve_supabase

pytestmark = pytest.mark.anyio


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


@pytest.fixture
def conn(database_url: str) -> Any:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
        yield c


async def acquire(store: Store, manager: str, instance: uuid.UUID, **kwargs: Any) -> Any:
    args: dict[str, Any] = {"host": "h1", "pid": 4242, "ttl_s": 60.0, **kwargs}
    return await store.acquire_lease(manager, instance, **args)


async def test_acquire_renew_refuse_take_over_and_release(store: Store) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    taken = await acquire(store, "m1", first, capacity=10, agents=2)
    assert taken.acquired and not taken.took_over
    assert taken.lease.instance_id == first and taken.lease.capacity == 10
    assert taken.lease.expires_at > taken.lease.renewed_at
    renewed = await acquire(store, "m1", first, agents=3)
    assert renewed.acquired and renewed.lease.agents == 3
    assert renewed.lease.started_at == taken.lease.started_at
    # A second process of the same id: answered with the live holder.
    refused = await acquire(store, "m1", second, pid=777)
    assert not refused.acquired and refused.lease.instance_id == first
    assert refused.lease.pid == 4242 and refused.lease.host == "h1"
    # ... unless it proved that holder dead.
    replaced = await acquire(store, "m1", second, pid=777, replaces=first)
    assert replaced.acquired and replaced.took_over and replaced.lease.instance_id == second
    # The replaced process cannot renew any more.
    assert not (await acquire(store, "m1", first)).acquired
    assert await store.release_lease("m1", second)
    assert not await store.release_lease("m1", first)
    (listed,) = await store.list_leases()
    assert listed.state == "stopped" and listed.live_agents == 0
    # A released lease is taken by the next start at once.
    again = await acquire(store, "m1", first)
    assert again.acquired and again.took_over


async def test_an_expired_lease_is_taken_and_listed_as_expired(store: Store, conn: Any) -> None:
    first = uuid.uuid4()
    await acquire(store, "m1", first)
    await acquire(store, "m2", uuid.uuid4())
    expire_lease(conn, "m1")
    leases = {lease.manager_id: lease for lease in await store.list_leases()}
    assert leases["m1"].state == "expired" and leases["m2"].state == "leading"
    assert leases["m2"].lease_age_s is not None and leases["m2"].lease_age_s >= 0
    taken = await acquire(store, "m1", uuid.uuid4(), host="h2")
    assert taken.acquired and taken.took_over and taken.lease.host == "h2"


async def test_no_claim_without_a_valid_lease(store: Store, conn: Any) -> None:
    with pytest.raises(StoreError, match="no valid lease"):
        await store.claim_document("doc", "a1", "m1", None)
    instance = uuid.uuid4()
    await acquire(store, "m1", instance)
    # The lease of another instance of this id does not count.
    with pytest.raises(StoreError, match="no valid lease"):
        await store.claim_document("doc", "a1", "m1", None, {"manager_instance": str(uuid.uuid4())})
    claim = await store.claim_document("doc", "a1", "m1", None, {"manager_instance": str(instance)})
    assert claim.claimed
    expire_lease(conn, "m1")
    with pytest.raises(StoreError, match="no valid lease"):
        await store.claim_document("doc2", "a2", "m1", None)
    # The same life asking again after a lost answer still gets its row back.
    assert (await store.claim_document("doc", "a1", "m1", None)).row.agent_id == "a1"
    assert conn.execute("SELECT count(*) AS n FROM agent_connections").fetchone()["n"] == 1


async def test_a_claim_ends_the_row_of_a_dead_manager_and_takes_the_document(
    store: Store, conn: Any
) -> None:
    await acquire(store, "m1", uuid.uuid4())
    await acquire(store, "m2", uuid.uuid4())
    assert (await store.claim_document("doc", "a1", "m1", None)).claimed
    refused = await store.claim_document("doc", "b1", "m2", None)
    assert not refused.claimed and refused.row.agent_id == "a1"
    assert await store.claimable_documents(["doc", "free"]) == ["free"]
    expire_lease(conn, "m1")
    assert sorted(await store.claimable_documents(["doc", "free"])) == ["doc", "free"]
    taken = await store.claim_document("doc", "b2", "m2", None)
    assert taken.claimed and taken.row.manager_id == "m2"
    old = conn.execute("SELECT * FROM agent_lifetimes WHERE agent_id = 'a1'").fetchone()
    assert old["status"] == "disconnected" and old["end_reason"] == "manager_lease_expired"


async def test_sweep_ends_every_live_row_of_expired_leases_only(store: Store, conn: Any) -> None:
    await acquire(store, "m1", uuid.uuid4())
    await acquire(store, "m2", uuid.uuid4())
    for n in range(3):
        assert (await store.claim_document(f"d{n}", f"a{n}", "m1", None)).claimed
    assert (await store.claim_document("e", "b", "m2", None)).claimed
    stats = await store.system_stats()
    assert stats.total_agents == 4
    expire_lease(conn, "m1")
    # The stats count only live managers' agents, before any sweep.
    assert (await store.system_stats()).total_agents == 1
    ended = await store.sweep_expired_leases()
    assert sorted(row.agent_id for row in ended) == ["a0", "a1", "a2"]
    assert all(row.error_message.startswith("manager_lease_expired") for row in ended)
    assert await store.sweep_expired_leases() == []
    live = conn.execute(
        "SELECT agent_id FROM agent_connections WHERE status = 'connecting'"
    ).fetchall()
    assert [r["agent_id"] for r in live] == ["b"]


async def test_ends_keep_their_real_time(store: Store, conn: Any) -> None:
    await acquire(store, "m1", uuid.uuid4())
    assert (await store.claim_document("doc", "a1", "m1", None)).claimed
    row = conn.execute("SELECT connected_at FROM agent_connections").fetchone()
    ended_at = row["connected_at"] + (conn.execute("SELECT interval '1 ms' AS i").fetchone()["i"])
    (ended,) = await store.end_agent_lives_at([("a1", "disconnected", "idle", ended_at)])
    assert ended.disconnected_at == ended_at and ended.error_message == "idle"
    assert await store.end_agent_lives_at([("a1", "disconnected", "evicted", ended_at)]) == []


async def test_drain_is_asked_through_the_lease_and_lasts_until_the_process_stops(
    store: Store, conn: Any
) -> None:
    instance = uuid.uuid4()
    await acquire(store, "m1", instance)
    assert not await store.drain_manager("nobody")
    assert await store.drain_manager("m1")
    renewed = await acquire(store, "m1", instance)  # the manager renews as 'leading'
    assert renewed.acquired and renewed.lease.state == "draining"
    assert await store.release_lease("m1", instance)
    assert not await store.drain_manager("m1")  # stopped: nothing to drain
    fresh = await acquire(store, "m1", uuid.uuid4())
    assert fresh.acquired and fresh.lease.state == "leading"


async def test_a_claim_hands_a_draining_managers_document_over(store: Store, conn: Any) -> None:
    await acquire(store, "m1", uuid.uuid4())
    await acquire(store, "m2", uuid.uuid4())
    assert (await store.claim_document("doc", "a1", "m1", None)).claimed
    assert (await store.claim_document("kept", "k1", "m2", None)).claimed
    assert await store.claimable_documents(["doc", "kept"]) == []
    assert await store.drain_manager("m1")
    assert await store.claimable_documents(["doc", "kept"]) == ["doc"]
    # The draining manager itself cannot take the row back by claiming.
    refused = await store.claim_document("doc", "a2", "m1", None)
    assert not refused.claimed and refused.row.agent_id == "a1"
    taken = await store.claim_document("doc", "b1", "m2", None)
    assert taken.claimed and taken.row.manager_id == "m2"
    old = conn.execute("SELECT * FROM agent_lifetimes WHERE agent_id = 'a1'").fetchone()
    assert old["status"] == "disconnected" and old["end_reason"] == "drained"
    assert old["end_detail"] == "drained: taken over by manager m2"
    # The new owner leads: its row is nobody else's to take.
    assert await store.claimable_documents(["doc"]) == []


def test_a_drain_notifies_the_fleet(database_url: str, conn: Any) -> None:
    hold_lease(conn, "m1")
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN manager_leases")
        assert conn.execute("SELECT drain_manager('m1') AS d").fetchone()["d"]
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in notes] == [("manager_leases", "m1")]
