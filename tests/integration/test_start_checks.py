"""Configurations that cannot work exit 78 (EX_CONFIG: systemd does not restart them)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def run(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manager.cli", command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def base_env(database_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop("DOCSERVER_AGENT_TOKEN", None)
    env.update(DATABASE_URL=database_url, DOCAGENTS_HOME=str(home), WS_PORT="1")
    return env


@contextlib.contextmanager
def read_only_directory(path: Path) -> Iterator[Path]:
    """A directory nobody can write: a read-only tmpfs as root, else mode 0555."""
    path.mkdir(parents=True)
    mounted = os.geteuid() == 0 and (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)]).returncode
        == 0
    )
    if not mounted:
        path.chmod(0o555)
    try:
        yield path
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)
        else:
            path.chmod(0o755)


def test_a_manager_without_the_agent_token_exits_78(database_url: str, tmp_path: Path) -> None:
    out = run("manager", base_env(database_url, tmp_path / "home"), tmp_path)
    assert out.returncode == 78, out.stderr[-2000:]
    assert "DOCSERVER_AGENT_TOKEN is not set" in out.stderr


@pytest.mark.parametrize("command", ["up", "docserver"])
def test_an_unwritable_home_exits_78(database_url: str, tmp_path: Path, command: str) -> None:
    with read_only_directory(tmp_path / "home") as home:
        env = base_env(database_url, home)
        env["DOCSERVER_AGENT_TOKEN"] = "t"
        if command == "up":
            env.pop("DATABASE_URL")  # embedded: the home holds the database
        out = run(command, env, tmp_path)
    assert out.returncode == 78, (out.stdout + out.stderr)[-3000:]
    assert "not writable" in out.stdout + out.stderr
