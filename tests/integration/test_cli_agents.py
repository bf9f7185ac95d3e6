"""`docagents agents` lists live agents from the live_agents view."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest

from tests.integration.lease_support import hold_lease


@pytest.fixture(autouse=True)
def _leases(database_url: str) -> None:
    """claim_document needs a valid lease."""
    hold_lease(database_url, "host-1")
    hold_lease(database_url, "host-2")


def test_agents_lists_live_agents(database_url: str, db: psycopg.Connection) -> None:
    db.execute("SELECT * FROM claim_document('doc-a', 'agent-a', 'host-1', 'h1')")
    db.execute("SELECT * FROM set_agent_status('agent-a', 'active', 1234)")
    db.execute(
        'SELECT record_agent_metrics(\'[{"agent_id":"agent-a","memory_mb":31.5,'
        '"cpu_percent":2.5,"llm_calls":3,"locations_marked":2}]\'::jsonb)'
    )
    db.execute("SELECT * FROM claim_document('doc-b', 'agent-b', 'host-2', 'h2')")
    db.execute("SELECT * FROM claim_document('doc-c', 'agent-c', 'host-2', 'h2')")
    db.execute("SELECT * FROM end_agent_life('agent-c', 'disconnected', 'idle')")
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
        "MEM",
        "MB",
        "CPU",
        "%",
        "LLM",
        "MARKS",
        "MANAGER",
    ]
    assert lines[1].split() == [
        "doc-a",
        "active",
        "1234",
        lines[1].split()[3],
        "31.5",
        "2.5",
        "3",
        "2",
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
