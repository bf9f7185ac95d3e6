"""The manager daemon in-process: real Postgres, real forkserver processes (stand-in worker).

Documents are driven by inserting ``document_activity`` rows, as the docserver does.
Conditions on the database are awaited by polling under ``fail_after``.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import manager_standin
import psutil
import psycopg
import pytest
from manager_support import running_manager
from psycopg.rows import dict_row

from manager.config import Settings
from manager.daemon.driver import ManagerDaemon
from manager.errors import ConfigurationError, StoreUnavailable
from manager.store.postgres import PostgresStore
from manager.supervise.supervisor import Supervisor
from manager.workers.launcher import WorkerLauncher
from tests.integration.lease_support import expire_lease, hold_lease

pytestmark = pytest.mark.anyio

FAST = {
    "max_concurrent_agents": 10,
    "min_residency_s": 0.0,
    "ping_interval_s": 0.3,
    "ping_timeout_s": 0.5,
    "detach_grace_s": 2.0,
    "kill_grace_s": 0.5,
    "shutdown_timeout_s": 5.0,
    "poll_interval_s": 1.0,
    "flush_interval_s": 0.1,
    "stats_interval_s": 3600.0,
    "restart_backoff_min_s": 0.05,
    "restart_backoff_max_s": 0.2,
    "restart_stable_s": 60.0,
    "claim_retry_s": 0.5,
}


def make_settings(manager_id: str = "test-manager", **overrides: Any) -> Settings:
    return Settings(manager_id=manager_id, **{**FAST, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def launcher() -> WorkerLauncher:
    launcher = WorkerLauncher(target=manager_standin.main)
    launcher.warm_up()
    return launcher


class Db:
    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)

    def event(self, document_id: str, event_type: str = "active", users: int = 1) -> None:
        self.conn.execute(
            "INSERT INTO document_activity (document_id, event_type, user_count)"
            " VALUES (%s, %s, %s)",
            (document_id, event_type, users if event_type != "idle" else 0),
        )

    def rows(self, document_id: str | None = None) -> list[dict[str, Any]]:
        if document_id is None:
            return self.conn.execute(
                "SELECT * FROM agent_connections ORDER BY connected_at"
            ).fetchall()
        return self.conn.execute(
            "SELECT * FROM agent_connections WHERE document_id = %s ORDER BY connected_at",
            (document_id,),
        ).fetchall()

    def live(self) -> dict[str, dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM agent_connections WHERE status IN ('connecting', 'active')"
        ).fetchall()
        return {r["document_id"]: r for r in rows}

    def active(self, document_id: str) -> dict[str, Any] | None:
        row = self.live().get(document_id)
        return row if row is not None and row["status"] == "active" else None


@pytest.fixture
def db(database_url: str) -> Iterator[Db]:
    db = Db(database_url)
    with db.conn:
        yield db


async def until(predicate: Callable[[], Any], within: float = 10.0) -> Any:
    """Poll a condition on the database (rows have no event to wait on)."""
    with anyio.fail_after(within):
        while not (value := predicate()):  # noqa: ASYNC110
            await anyio.sleep(0.05)
    return value


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_attach_metrics_and_detach_on_idle(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    async with running_manager(make_settings(), database_url, launcher):
        db.event("doc-1")
        row = await until(lambda: db.active("doc-1"))
        pid = row["agent_pid"]
        assert pid and not gone(pid)
        assert row["manager_id"] == "test-manager"
        assert row["metadata"]["pid_create_time"] == pytest.approx(
            psutil.Process(pid).create_time()
        )
        metrics = await until(
            lambda: db.conn.execute(
                "SELECT * FROM agent_metrics WHERE agent_connection_id = %s", (row["id"],)
            ).fetchall()
        )
        assert float(metrics[0]["memory_mb"]) == 12.5
        db.event("doc-1", "idle")
        await until(lambda: db.rows("doc-1")[-1]["status"] == "disconnected")
        assert db.rows("doc-1")[-1]["error_message"] == "idle"
        await until(lambda: gone(pid), 5)
        assert len(db.rows("doc-1")) == 1


async def test_wanted_documents_attach_at_start_most_recent_first(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    for doc in ["old", "gone", "mid", "new"]:
        db.event(doc)
    db.event("gone", "idle")
    async with running_manager(make_settings(max_concurrent_agents=2), database_url, launcher):
        await until(
            lambda: {d for d, r in db.live().items() if r["status"] == "active"} == {"mid", "new"}
        )
        assert db.rows("old") == [] and db.rows("gone") == []


async def test_cap_lru_eviction_and_no_thrash(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    settings = make_settings(max_concurrent_agents=2, min_residency_s=1.0)
    async with running_manager(settings, database_url, launcher) as daemon:
        db.event("A")
        await until(lambda: db.active("A"))
        db.event("B")
        await until(lambda: db.active("B"))
        db.event("C")  # A is least recent: evicted once it has lived 1 s
        await until(lambda: db.active("C"))
        assert db.rows("A")[-1]["error_message"] == "evicted"
        assert set(db.live()) == {"B", "C"}
        assert daemon.supervisor.waiting == 1
        # B and C stay busy, A waits: nobody is evicted however long this goes on.
        for i in range(20):
            db.event("BC"[i % 2], "user_joined", 2)
            await anyio.sleep(0.1)
        assert daemon.supervisor.evictions == 1
        assert set(db.live()) == {"B", "C"} and len(db.rows()) == 3
        # A slot frees: the evicted A gets an agent back.
        db.event("B", "idle")
        await until(lambda: db.active("A"))
        assert len(db.rows("A")) == 2
        assert daemon.supervisor.lives <= 2


async def test_worker_sigkill_is_restarted(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    async with running_manager(make_settings(), database_url, launcher) as daemon:
        db.event("doc-k")
        first = await until(lambda: db.active("doc-k"))
        os.kill(first["agent_pid"], signal.SIGKILL)
        second = await until(
            lambda: (r := db.active("doc-k")) and r["agent_id"] != first["agent_id"] and r
        )
        old = db.rows("doc-k")[0]
        assert old["status"] == "disconnected"
        assert old["error_message"] == "crashed: killed by SIGKILL"
        assert second["agent_pid"] != first["agent_pid"]
        assert daemon.supervisor.restarts == 1


async def test_stopped_worker_is_detected_by_ping_killed_and_restarted(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    async with running_manager(make_settings(), database_url, launcher):
        db.event("doc-s")
        first = await until(lambda: db.active("doc-s"))
        os.kill(first["agent_pid"], signal.SIGSTOP)
        await until(lambda: (r := db.active("doc-s")) and r["agent_id"] != first["agent_id"])
        assert db.rows("doc-s")[0]["error_message"] == "crashed: no pong within 0.5 s"
        await until(lambda: gone(first["agent_pid"]), 5)


async def test_crash_loop_backs_off_then_error_until_next_active(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    settings = make_settings(crash_loop_restarts=3, crash_loop_window_s=60)
    async with running_manager(settings, database_url, launcher) as daemon:
        db.event("crash-1")
        await until(lambda: any(r["status"] == "error" for r in db.rows("crash-1")))
        rows = db.rows("crash-1")
        assert [r["status"] for r in rows] == ["disconnected"] * 3 + ["error"]
        assert rows[0]["error_message"] == "crashed: exited with code 3"
        assert rows[-1]["error_message"].startswith("crash_loop: ")
        # Each restart claims its life (connected_at) only after the previous
        # worker exited and the backoff (0.05, 0.1, 0.2 s) passed. disconnected_at
        # is stamped when the writer flushes, so it is no clock for the backoff.
        claims = [
            (b["connected_at"] - a["connected_at"]).total_seconds()
            for a, b in itertools.pairwise(rows)
        ]
        assert claims[0] >= 0.05 and claims[1] >= 0.1 and claims[2] >= 0.2
        await anyio.sleep(1.0)
        assert len(db.rows("crash-1")) == 4 and daemon.supervisor.blocked("crash-1") == "crash_loop"
        db.event("crash-1")  # a new 'active' event: try again
        await until(lambda: len(db.rows("crash-1")) > 4)


async def test_garbage_on_pipe_restarts_only_that_worker(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    settings = make_settings(crash_loop_restarts=2)
    async with running_manager(settings, database_url, launcher):
        db.event("doc-fine")
        fine = await until(lambda: db.active("doc-fine"))
        db.event("garbage-1")
        await until(lambda: len(db.rows("garbage-1")) >= 2)
        assert db.rows("garbage-1")[0]["error_message"].startswith("crashed: protocol error")
        assert db.rows("doc-fine") == [fine] or db.rows("doc-fine")[0]["id"] == fine["id"]
        assert len(db.rows("doc-fine")) == 1 and not gone(fine["agent_pid"])


async def test_abandoned_document_is_detached_and_not_restarted(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    async with running_manager(make_settings(), database_url, launcher) as daemon:
        db.event("abandon-1")
        await until(
            lambda: db.rows("abandon-1") and db.rows("abandon-1")[-1]["status"] == "disconnected"
        )
        assert db.rows("abandon-1")[-1]["error_message"] == "abandoned"
        await anyio.sleep(0.5)
        assert len(db.rows("abandon-1")) == 1
        assert daemon.supervisor.blocked("abandon-1") == "abandoned"


async def test_two_managers_one_document_one_agent(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    before = {w.pid for w in launcher.workers}
    async with (
        running_manager(make_settings("m1", claim_retry_s=0.2), database_url, launcher),
        running_manager(make_settings("m2", claim_retry_s=0.2), database_url, launcher),
    ):
        db.event("shared")
        await until(lambda: db.active("shared"))
        await anyio.sleep(1.0)  # both retried their claims several times meanwhile
        rows = db.rows("shared")
        assert len(rows) == 1 and rows[0]["status"] == "active"
        assert len({w.pid for w in launcher.workers} - before) == 1


async def test_shutdown_with_ten_agents_detaches_all(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    async with running_manager(make_settings(), database_url, launcher):
        for i in range(10):
            db.event(f"doc-{i}")
        await until(lambda: len([r for r in db.live().values() if r["status"] == "active"]) == 10)
        pids = [r["agent_pid"] for r in db.live().values()]
        started = anyio.current_time()
    assert anyio.current_time() - started < 10
    rows = db.rows()
    assert len(rows) == 10
    assert {r["status"] for r in rows} == {"disconnected"}
    assert {r["error_message"] for r in rows} == {"manager_shutdown"}
    assert all(gone(pid) for pid in pids)


async def test_restart_ends_stale_rows_and_reattaches(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    db.event("doc-r")
    hold_lease(db.conn, "test-manager")  # a previous run that died: its lease expired
    db.conn.execute(
        "SELECT * FROM claim_document('doc-r', 'stale-agent', 'test-manager', 'h', '{}'::jsonb)"
    )
    expire_lease(db.conn, "test-manager")
    db.conn.execute("SELECT * FROM set_agent_status('stale-agent', 'active', 999999)")
    async with running_manager(make_settings(), database_url, launcher):
        await until(lambda: db.active("doc-r"))
        stale = db.rows("doc-r")[0]
        assert stale["agent_id"] == "stale-agent"
        assert stale["status"] == "disconnected" and stale["error_message"] == "manager_restarted"


async def test_missing_schema_is_a_clear_error(
    empty_database_url: str, launcher: WorkerLauncher
) -> None:
    store = await PostgresStore.connect(empty_database_url)
    try:
        daemon = ManagerDaemon(make_settings(), store, empty_database_url, launcher)
        with pytest.raises(ConfigurationError, match="docagents migrate"):
            await daemon.run()
    finally:
        await store.aclose()


async def test_an_idle_manager_does_not_spin(
    database_url: str, db: Db, launcher: WorkerLauncher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing to do, the ticker sleeps until its next deadline (about once a second).

    Counted, not timed: a ticker that woke itself after every tick (a bug that
    once cost a whole core) makes thousands of supervisor ticks in the same span.
    """
    ticks = 0
    original = Supervisor.tick

    def counting_tick(self: Supervisor, now: float) -> Any:
        nonlocal ticks
        ticks += 1
        return original(self, now)

    monkeypatch.setattr(Supervisor, "tick", counting_tick)
    async with running_manager(make_settings("idle-manager"), database_url, launcher):
        ticks = 0
        await anyio.sleep(1.5)
        seen = ticks
    assert seen <= 10, f"{seen} supervisor ticks in 1.5 s with nothing to do"


# --- issue 14: the life cycle's edges, with real processes and Postgres ----------------


class LoseFirstClaimAnswer:
    """The real store, except that the first claim's answer is lost after Postgres
    committed it (as when the connection drops mid-call)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.lost: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_documents(self, claims: Any, *args: Any, **kwargs: Any) -> Any:
        results = await self._store.claim_documents(claims, *args, **kwargs)
        if not self.lost:
            self.lost += [agent for _, agent in claims]
            raise StoreUnavailable("connection lost before the answer arrived")
        return results


async def test_a_lost_claim_answer_is_retried_as_the_same_life(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    """#9: the claim committed, its answer was lost: the retry (same agent id) gets the
    row, well within CLAIM_RETRY_S; no 'owned by manager <self>' loop."""
    wrappers: list[LoseFirstClaimAnswer] = []

    def wrap(store: PostgresStore) -> LoseFirstClaimAnswer:
        wrappers.append(LoseFirstClaimAnswer(store))
        return wrappers[-1]

    settings = make_settings(claim_retry_s=15.0)
    async with running_manager(settings, database_url, launcher, wrap_store=wrap):
        db.event("lost-1")
        row = await until(lambda: db.active("lost-1"), within=10)
        assert wrappers[0].lost == [row["agent_id"]]
        assert [r["agent_id"] for r in db.rows("lost-1")] == [row["agent_id"]]


async def test_a_row_ended_elsewhere_stops_its_worker(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    """A life whose row someone else ended (an operator, or another manager taking
    the document over) does not keep a worker writing in the document."""
    async with running_manager(make_settings(poll_interval_s=0.3), database_url, launcher):
        db.event("taken-1")
        row = await until(lambda: db.active("taken-1"))
        db.conn.execute(
            "SELECT * FROM end_agent_life(%s, 'disconnected', 'ended by an operator')",
            (row["agent_id"],),
        )
        await until(lambda: gone(row["agent_pid"]), within=10)
        # Still wanted: a new life attaches after CLAIM_RETRY_S; the old row keeps
        # the reason of whoever ended it first.
        new = await until(lambda: db.active("taken-1"), within=10)
        assert new["agent_id"] != row["agent_id"]
        assert db.rows("taken-1")[0]["error_message"] == "ended by an operator"


async def test_two_managers_at_capacity_never_evict_for_each_others_documents(
    database_url: str, db: Db, launcher: WorkerLauncher
) -> None:
    """#6: each manager holds one document at its cap of one; the other's document is
    active too, and more recent. Once residencies have passed, neither evicts its
    own agent for a document it cannot get (before: one eviction per CLAIM_RETRY_S)."""
    one = make_settings(
        "manager-one", max_concurrent_agents=1, min_residency_s=10.0, claim_retry_s=0.5
    )
    two = make_settings(
        "manager-two", max_concurrent_agents=1, min_residency_s=10.0, claim_retry_s=0.5
    )
    async with running_manager(one, database_url, launcher) as daemon_one:
        db.event("doc-one")
        first = await until(lambda: db.active("doc-one"))
        assert first["manager_id"] == "manager-one"
        async with running_manager(two, database_url, launcher) as daemon_two:
            db.event("doc-two")  # manager-one is full with a young agent: manager-two gets it
            second = await until(lambda: db.active("doc-two"))
            assert second["manager_id"] == "manager-two"
            await anyio.sleep(60)  # past the residency, then 100 claim retries each
            assert daemon_one.supervisor.evictions == 0
            assert daemon_two.supervisor.evictions == 0
            rows = db.rows()
            assert [(r["document_id"], r["status"]) for r in rows] == [
                ("doc-one", "active"),
                ("doc-two", "active"),
            ]
