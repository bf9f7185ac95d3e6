"""Make-before-break drain with real `docagents manager` processes, the real docserver
(fencing) and people as plain Node y-websocket clients.

Every document's person watches the awareness: an agent must be there at every
50 ms sample while its document moves from a draining manager to another one
(the successor connects, the docserver retires the old agent with 4412). Sized
for a loaded 2-core machine: 6 documents (the issue's acceptance runs 24).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from docserver_support import DocserverProcess
from plain_client import PlainClient, plain_client
from psycopg.rows import dict_row

from tests.integration.manager_support import start_manager
from tests.integration.test_fleet import exited, fleet_env, leases
from tests.integration.test_manager_cli import active, alive, stop, until

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.js]

SAMPLE_S = 0.05
MAX_GAP_S = 1.0


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@dataclass
class Presence:
    """What the people saw: per document, samples without an agent, and the real gaps
    (from the client's own change events, in ms of its clock)."""

    absent_samples: dict[str, int] = field(default_factory=dict)
    samples: int = 0

    @staticmethod
    def gaps_ms(client: PlainClient) -> list[int]:
        gaps, lost_at = [], None
        for change in client.agent_changes():
            if not change["present"]:
                lost_at = change["t"]
            elif lost_at is not None:
                gaps.append(change["t"] - lost_at)
                lost_at = None
        return gaps

    def max_gap_s(self, clients: dict[str, PlainClient]) -> float:
        gaps = [g for client in clients.values() for g in self.gaps_ms(client)]
        return max(gaps, default=0) / 1000


async def watch(clients: dict[str, PlainClient], presence: Presence) -> None:
    """Until cancelled: sample every document's agent presence every 50 ms."""
    while True:
        presence.samples += 1
        for doc, client in clients.items():
            if not client.agent_present:
                presence.absent_samples[doc] = presence.absent_samples.get(doc, 0) + 1
        await anyio.sleep(SAMPLE_S)


@asynccontextmanager
async def people(
    server: DocserverProcess, docs: list[str]
) -> AsyncIterator[dict[str, PlainClient]]:
    """One person (a plain client) in each document, for the whole block."""
    async with AsyncExitStack() as stack:
        base = f"ws://127.0.0.1:{server.port}/parties/document"
        clients = {doc: await stack.enter_async_context(plain_client(base, doc)) for doc in docs}
        yield clients


def docserver(tmp_path: Path, database_url: str) -> DocserverProcess:
    return DocserverProcess(tmp_path / "docserver", database_url, idle_timeout_ms=600_000)


async def fleet_has_read(db: psycopg.Connection[Any], names: list[str], since: str) -> None:
    """Every manager in ``names`` renewed (and read the fleet) after ``since`` started."""
    joined = leases(db)[since]["started_at"]
    await until(
        lambda: all(
            leases(db)[name]["renewed_at"] > joined + timedelta(seconds=0.2) for name in names
        ),
        within=15,
    )
    await anyio.sleep(0.3)  # the renewal's fleet read follows its answer


async def test_a_drained_managers_documents_get_their_successor_before_the_old_agent_leaves(
    database_url: str, db: psycopg.Connection[dict[str, Any]], tmp_path: Path
) -> None:
    docs = [f"mbb{n}" for n in range(6)]
    server = docserver(tmp_path, database_url)
    await server.start()
    # Default lease timing: the handoff starts on the drain's NOTIFY, not a renewal.
    env_a = {**fleet_env(database_url, server.port, tmp_path, "drain-a"), "LEASE_RENEW_S": "2"}
    env_a["LEASE_TTL_S"] = "10"
    env_b = {**env_a, "MANAGER_ID": "drain-b"}
    first = start_manager(env_a, tmp_path, "drain-a")
    second: subprocess.Popen[bytes] | None = None
    try:
        async with people(server, docs) as clients, anyio.create_task_group() as tg:
            before = await until(lambda: len(active(db)) == len(docs) and active(db), within=60)
            await until(lambda: all(c.agent_present for c in clients.values()), within=30)
            second = start_manager(env_b, tmp_path, "drain-b")
            await until(lambda: leases(db).get("drain-b", {}).get("state") == "leading", within=30)
            await fleet_has_read(db, ["drain-a"], since="drain-b")
            presence = Presence()
            tg.start_soon(watch, clients, presence)
            started = time.monotonic()
            # What `docagents drain drain-a` runs (test_fleet.py runs the command itself).
            asked = db.execute(
                "SELECT drain_manager('drain-a') AS drained, clock_timestamp() AS at"
            ).fetchone()
            assert asked["drained"]

            def moved() -> list[dict[str, Any]] | None:
                rows = [r for r in active(db) if r["manager_id"] == "drain-b"]
                return rows if {r["document_id"] for r in rows} == set(docs) else None

            taken = await until(moved, within=30)
            all_moved_s = time.monotonic() - started
            await until(lambda: not any(alive(r["agent_pid"]) for r in before), within=15)
            tg.cancel_scope.cancel()
        # The successor's claims ended the old rows: when the handoffs began.
        claims = db.execute(
            "SELECT extract(epoch FROM min(disconnected_at) - %(at)s) AS first,"
            " extract(epoch FROM max(disconnected_at) - %(at)s) AS last"
            " FROM agent_connections WHERE agent_id = ANY(%(agents)s)",
            {"at": asked["at"], "agents": [r["agent_id"] for r in before]},
        ).fetchone()
        figures = {
            "documents": len(docs),
            "max_gap_s": presence.max_gap_s(clients),
            "absent_samples": presence.absent_samples,
            "samples": presence.samples,
            "all_moved_s": round(all_moved_s, 2),
            "first_claim_s": round(float(claims["first"]), 3),
            "last_claim_s": round(float(claims["last"]), 3),
        }
        print(json.dumps(figures))
        # Woken by the drain's NOTIFY, not by its next renewal (LEASE_RENEW_S=2).
        assert float(claims["first"]) <= 1.0
        assert presence.max_gap_s(clients) <= MAX_GAP_S
        assert all(n * SAMPLE_S <= MAX_GAP_S for n in presence.absent_samples.values())
        assert all(r["fence"] > max(b["fence"] for b in before) for r in taken)
        ended = db.execute(
            "SELECT end_reason, end_detail FROM agent_lifetimes WHERE agent_id = ANY(%s)",
            ([r["agent_id"] for r in before],),
        ).fetchall()
        assert {r["end_reason"] for r in ended} == {"drained"}
        assert {r["end_detail"] for r in ended} == {"drained: taken over by manager drain-b"}
        # The old agents were retired by the fence (make-before-break), not detached.
        assert server.log().count('"agent_fenced"') >= len(docs)
        assert leases(db)["drain-a"]["state"] == "draining"
        assert first.poll() is None  # drained, still up, until SIGTERM
        for proc in (first, second):
            proc.send_signal(signal.SIGTERM)
        for proc in (first, second):
            assert await exited(proc) == 0
    finally:
        stop(first)
        if second is not None:
            stop(second)
        await server.stop()


PLACES = [("Vienna", "Salzburg"), ("Lyon", "Marseille")]


async def type_sentences(
    clients: dict[str, PlainClient], typed: dict[str, int], every_s: float
) -> None:
    """Until cancelled: a sentence with two places, ending in '.', in each document in turn."""
    n = 0
    while True:
        for doc, client in clients.items():
            first, second = PLACES[n % len(PLACES)]
            await client.type(f"Then we drove from {first} to {second}.")
            typed[doc] = typed.get(doc, 0) + 1
            await anyio.sleep(every_s / len(clients))
        n += 1


async def test_a_rolling_restart_of_three_managers_keeps_an_agent_in_every_document(
    database_url: str, db: psycopg.Connection[dict[str, Any]], tmp_path: Path
) -> None:
    """SIGTERM one manager at a time (each drains make-before-break, then exits), start
    it again, then the next; people type all along. Every '.' typed is marked and no
    document is without an agent for more than 1 s."""
    names = ["roll-a", "roll-b", "roll-c"]
    docs = [f"roll{n}" for n in range(6)]
    server = docserver(tmp_path, database_url)
    await server.start()
    envs = {name: fleet_env(database_url, server.port, tmp_path, name) for name in names}
    procs = {name: start_manager(envs[name], tmp_path, name) for name in names}
    typed: dict[str, int] = {}
    handovers: list[dict[str, Any]] = []
    try:
        await until(lambda: len(leases(db)) == 3, within=60)
        await fleet_has_read(db, names, since=max(names, key=lambda n: leases(db)[n]["started_at"]))
        async with people(server, docs) as clients:
            await until(lambda: len(active(db)) == len(docs), within=60)
            await until(lambda: all(c.agent_present for c in clients.values()), within=30)
            presence = Presence()
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch, clients, presence)
                tg.start_soon(type_sentences, clients, typed, 2.0)
                for round_, name in enumerate(names):
                    held = [r["document_id"] for r in active(db) if r["manager_id"] == name]
                    began = time.monotonic()
                    procs[name].send_signal(signal.SIGTERM)
                    assert await exited(procs[name], within=40) == 0
                    handovers.append(
                        {
                            "manager": name,
                            "documents": len(held),
                            "exit_s": round(time.monotonic() - began, 2),
                        }
                    )
                    await until(lambda: len(active(db)) == len(docs), within=30)
                    procs[name] = start_manager(envs[name], tmp_path, f"{name}-{round_}")
                    await until(lambda n=name: leases(db)[n]["state"] == "leading", within=60)
                    await fleet_has_read(db, names, since=name)
                tg.cancel_scope.cancel()
            # Every '.' typed is marked (the last sentences too, by whoever holds them).
            for doc, client in clients.items():
                expected = 2 * typed.get(doc, 0)
                await client.wait_for(lambda c, n=expected: len(c.marks) >= n, within=30)
        figures = {
            "documents": len(docs),
            "sentences": sum(typed.values()),
            "max_gap_s": presence.max_gap_s(clients),
            "absent_samples": presence.absent_samples,
            "handovers": handovers,
        }
        print(json.dumps(figures))
        assert presence.max_gap_s(clients) <= MAX_GAP_S
        assert all(n * SAMPLE_S <= MAX_GAP_S for n in presence.absent_samples.values())
        for client in clients.values():
            assert {text for text, _ in client.marks} <= {p for pair in PLACES for p in pair}
        reasons = {
            r["end_reason"]
            for r in db.execute(
                "SELECT end_reason FROM agent_lifetimes WHERE disconnected_at IS NOT NULL"
            )
        }
        assert reasons <= {"drained", "owned_elsewhere"}, reasons
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            assert await exited(proc, within=40) == 0
    finally:
        for proc in procs.values():
            stop(proc)
        await server.stop()
