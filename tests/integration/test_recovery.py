"""recover(): real processes standing in for workers of a dead manager."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import psutil
import pytest

from manager.store.postgres import PostgresStore
from manager.supervise.actions import EndReason
from manager.supervise.recovery import recover
from tests.integration.lease_support import hold_lease

pytestmark = pytest.mark.anyio


def start(*cmd: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(cmd))


@pytest.fixture(autouse=True)
def _leases(database_url: str) -> None:
    """claim_document needs a valid lease."""
    hold_lease(database_url, "m1")
    hold_lease(database_url, "m2")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.connect(database_url)
    try:
        yield s
    finally:
        await s.aclose()


async def live_row(store: PostgresStore, doc: str, pid: int, create_time: float | None) -> str:
    agent_id = f"agent-{doc}"
    claim = await store.claim_document(doc, agent_id, "m1", "host")
    assert claim.claimed
    meta = {} if create_time is None else {"pid_create_time": create_time}
    await store.set_agent_status(agent_id, "active", pid=pid, metadata=meta)
    return agent_id


async def test_recover_kills_our_worker_spares_others_ends_all_rows(
    store: PostgresStore,
) -> None:
    ctx = multiprocessing.get_context("forkserver")
    worker = ctx.Process(target=time.sleep, args=(120,), daemon=True)
    worker.start()
    assert worker.pid is not None
    unrelated = start(sys.executable, "-c", "import time; time.sleep(120)")
    stranger = start("sleep", "120")
    dead = start("true")
    dead.wait()
    try:
        ours = await live_row(store, "ours", worker.pid, psutil.Process(worker.pid).create_time())
        # A pid reused by another process: its create time does not match.
        reused = await live_row(
            store, "reused", unrelated.pid, psutil.Process(unrelated.pid).create_time() - 50
        )
        # Right start time, but not a worker's command line.
        other = await live_row(
            store, "other", stranger.pid, psutil.Process(stranger.pid).create_time()
        )
        gone = await live_row(store, "gone", dead.pid, None)
        nopid = "agent-nopid"
        await store.claim_document("nopid", nopid, "m1", None)
        await store.claim_document("elsewhere", "agent-elsewhere", "m2", None)

        ended = await recover(store, "m1")

        assert {r.agent_id for r in ended} == {ours, reused, other, gone, nopid}
        assert all(r.status == "disconnected" for r in ended)
        assert all(r.error_message == EndReason.MANAGER_RESTARTED for r in ended)
        worker.join(timeout=5)
        assert worker.exitcode == -9
        assert unrelated.poll() is None
        assert stranger.poll() is None
        assert await store.live_agents_of_manager("m1") == []
        assert len(await store.live_agents_of_manager("m2")) == 1
        assert await recover(store, "m1") == []
    finally:
        for proc in (unrelated, stranger):
            proc.kill()
            proc.wait()
        if worker.is_alive():
            worker.kill()
        worker.join()


async def test_custom_identity_check_is_used(store: PostgresStore) -> None:
    victim = start("sleep", "120")
    try:
        agent_id = await live_row(store, "doc", victim.pid, None)
        seen: list[int] = []

        def is_ours(pid: int, row: object) -> bool:
            seen.append(pid)
            return True

        ended = await recover(store, "m1", is_our_worker=is_ours)
        assert [r.agent_id for r in ended] == [agent_id]
        assert seen == [victim.pid]
        victim.wait(timeout=5)  # recover() already reaped it: no return code left
        assert not psutil.pid_exists(victim.pid)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
