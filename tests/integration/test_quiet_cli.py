"""Data commands print data only: clean stdout, empty stderr (unless -v or an error).

Run as an operator runs them: the ``docagents`` console script, the embedded
default (no ``DATABASE_URL``), no ``LOG_LEVEL`` set.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCAGENTS = str(Path(sys.executable).with_name("docagents"))
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCAGENTS, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    drop = {"DATABASE_URL", "LOG_LEVEL", "LOG_FORMAT", "SUPABASE_URL", "SUPABASE_SERVICE_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["DOCAGENTS_HOME"] = str(tmp_path / "home")
    return env


def test_data_commands_print_only_data_on_the_embedded_default(
    embedded_env: dict[str, str], tmp_path: Path
) -> None:
    migrated = run("migrate", env=embedded_env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stderr == ""

    stats = run("stats", "--json", env=embedded_env)
    assert stats.returncode == 0, stats.stderr
    assert stats.stderr == ""
    doc = json.loads(stats.stdout)
    assert doc["system"]["total_agents"] == 0
    assert doc["live"]["agents"] == 0 and doc["totals"]["llm_calls"] == 0

    agents = run("agents", "--json", env=embedded_env)
    assert (agents.returncode, agents.stdout, agents.stderr) == (0, "", "")

    psql = run("psql", "-X", "-A", "-t", "-c", "select 1", env=embedded_env)
    assert psql.returncode == 0, psql.stderr
    assert (psql.stdout, psql.stderr) == ("1\n", "")

    # -v: the same command tells what it did on stderr, in ISO 8601 UTC.
    loud = run("stats", "--json", "-v", env=embedded_env)
    assert loud.returncode == 0
    json.loads(loud.stdout)
    assert "embedded_postgres_attached" in loud.stderr
    assert ISO_UTC.search(loud.stderr), loud.stderr
    loud_json = run("-v", "agents", "--json", env={**embedded_env, "LOG_FORMAT": "json"})
    lines = [json.loads(line) for line in loud_json.stderr.splitlines()]
    assert lines and all(ISO_UTC.fullmatch(line["timestamp"]) for line in lines)


def test_version_and_help_say_only_that(embedded_env: dict[str, str]) -> None:
    version = run("--version", env=embedded_env)
    assert version.returncode == 0
    assert re.fullmatch(r"docagents, version \d+\.\d+\.\d+\S*\n", version.stdout)
    assert version.stderr == ""
    helped = run("manager", "--help", env=embedded_env)
    assert helped.returncode == 0 and "Usage: docagents manager" in helped.stdout
    assert helped.stderr == ""


def test_a_configuration_error_prints_one_line(embedded_env: dict[str, str]) -> None:
    failed = run("manager", env={**embedded_env, "MAX_CONCURRENT_AGENTS": "lots"})
    assert failed.returncode == 78
    assert failed.stdout == ""
    assert failed.stderr.count("\n") == 1, failed.stderr
    assert "MAX_CONCURRENT_AGENTS" in failed.stderr
