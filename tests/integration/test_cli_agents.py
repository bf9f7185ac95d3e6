"""`docagents agents` lists live agents from the live_agents view."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest

from tests.integration.lease_support import expire_lease, hold_lease


@pytest.fixture(autouse=True)
def _leases(database_url: str) -> None:
    """claim_document needs a valid lease."""
    hold_lease(database_url, "host-1")
    hold_lease(database_url, "host-2")


def test_agents_lists_live_agents(database_url: str, db: psycopg.Connection) -> None:
    db.execute("SELECT * FROM claim_document('doc-a', 'agent-a', 'host-1', 'h1')")
    db.execute("SELECT * FROM set_agent_status('agent-a', 'active', 1234)")
    db.execute(
        'SELECT record_agent_metrics(\'[{"agent_id":"agent-a","memory_mb":31.5,"pss_mb":9.5,'
        '"cpu_percent":2.5,"llm_calls":3,"locations_marked":2}]\'::jsonb)'
    )
    db.execute("SELECT * FROM claim_document('doc-b', 'agent-b', 'host-2', 'h2')")
    db.execute("SELECT * FROM claim_document('doc-c', 'agent-c', 'host-2', 'h2')")
    db.execute("SELECT * FROM end_agent_life('agent-c', 'disconnected', 'idle')")
    # doc-a's agent waits for 2 sentences; one of its sentences was given up.
    failed = [{"key": "k1", "extractor": "v", "status": "failed"}]
    db.execute(
        "SELECT record_extractions('doc-a', %s::jsonb, '[]'::jsonb, %s::jsonb)",
        (json.dumps(failed), json.dumps({"pending": 2})),
    )
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "warning"}
    table = subprocess.run(
        [sys.executable, "-m", "manager.cli", "agents"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = table.splitlines()
    assert lines[0].split() == [
        "DOCUMENT",
        "STATUS",
        "PID",
        "UPTIME",
        "PSS",
        "MiB",
        "CPU",
        "%",
        "LLM",
        "MARKS",
        "PENDING",
        "FAILED",
        "MANAGER",
    ]
    assert lines[1].split() == [
        "doc-a",
        "active",
        "1234",
        lines[1].split()[3],
        "9.5",
        "2.5",
        "3",
        "2",
        "2",
        "1",
        "host-1",
    ]
    assert lines[2].split()[:3] == ["doc-b", "connecting", "-"]
    assert lines[-1] == "2 live agent(s)"
    out = subprocess.run(
        [sys.executable, "-m", "manager.cli", "agents", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["document_id"] for r in records] == ["doc-a", "doc-b"]
    assert records[0]["llm_calls_count"] == 3
    assert (records[0]["extraction_pending"], records[0]["extraction_failed"]) == (2, 1)


def test_managers_lists_leases_with_agents_free_slots_age_and_state(
    database_url: str, db: psycopg.Connection
) -> None:
    db.execute("UPDATE manager_leases SET host = 'h1', pid = 111, capacity = 10, agents = 1")
    db.execute("SELECT * FROM claim_document('doc-a', 'agent-a', 'host-1', 'h1')")
    db.execute("SELECT * FROM claim_document('doc-b', 'agent-b', 'host-1', 'h1')")
    expire_lease(db, "host-2")
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "warning"}
    table = subprocess.run(
        [sys.executable, "-m", "manager.cli", "managers"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["MANAGER", "HOST", "PID", "AGENTS", "FREE", "LEASE", "AGE", "STATE"]
    host1 = next(line.split() for line in lines if line.startswith("host-1"))
    assert host1[:5] == ["host-1", "h1", "111", "2", "8"] and host1[-1] == "leading"
    host2 = next(line.split() for line in lines if line.startswith("host-2"))
    assert host2[4] == "-" and host2[-1] == "expired"
    assert lines[-1] == "1 live manager(s), 2 lease(s)"
    out = subprocess.run(
        [sys.executable, "-m", "manager.cli", "managers", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    records = {r["manager_id"]: r for r in map(json.loads, out.splitlines())}
    assert records["host-1"]["agents"] == 2 and records["host-1"]["free_slots"] == 8
    assert records["host-1"]["capacity"] == 10 and records["host-1"]["pid"] == 111
    assert records["host-1"]["lease_age_s"] >= 0
    assert records["host-2"]["state"] == "expired" and records["host-2"]["free_slots"] is None
