"""Foreground entry points: ``docagents manager`` and ``docagents up``.

``docagents up`` runs the whole stack on one host, in the foreground: the
embedded Postgres (or ``DATABASE_URL``), the migrations, the docserver as a child
process (``python -m manager.cli docserver``), and the manager in this process.
Ctrl+C stops the manager first (its workers leave their documents while the
docserver is still there), then the docserver, then releases the embedded
Postgres: nothing is left running.

Invariant 6: the database credentials are removed from ``os.environ`` before any
child starts (the forkserver copies the environment it starts with); the
docserver gets its ``DATABASE_URL`` explicitly, workers never.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys

import anyio
import structlog
from pydantic import SecretStr

from manager.config import Settings
from manager.daemon import run_manager
from manager.database import database_conninfo
from manager.processes import scrub_secret_environment

__all__ = ["run_manager_foreground", "run_up"]

log = structlog.get_logger(__name__)

#: How long the docserver gets to stop after SIGTERM before SIGKILL.
_DOCSERVER_STOP_S = 5.0
_PR_SET_PDEATHSIG = 1


def run_manager_foreground(settings: Settings) -> int:
    """``docagents manager``: the daemon alone; the schema must exist."""
    scrub_secret_environment()
    with database_conninfo(settings) as conninfo:
        return anyio.run(run_manager, settings, conninfo)


def run_up(settings: Settings) -> int:
    """``docagents up``: database + migrations + docserver + manager, in the foreground."""
    from manager.store.migrations import apply_migrations

    scrub_secret_environment()
    token = settings.docserver_agent_token
    if token is None:
        token = SecretStr(secrets.token_urlsafe(32))
        settings = settings.model_copy(update={"docserver_agent_token": token})
    with database_conninfo(settings) as conninfo:
        applied = anyio.run(apply_migrations, conninfo)
        if applied:
            log.info("migrations_applied", versions=applied)
        docserver = _start_docserver(conninfo, token.get_secret_value())
        try:
            return anyio.run(run_manager, settings, conninfo)
        finally:
            _stop_docserver(docserver)


def _start_docserver(conninfo: str, token: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": conninfo, "DOCSERVER_AGENT_TOKEN": token}
    proc = subprocess.Popen(
        [sys.executable, "-m", "manager.cli", "docserver"],
        env=env,
        # Its own process group: Ctrl+C reaches us, and we stop it after the
        # manager (workers leave their documents first).
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    log.info("docserver_started", pid=proc.pid)
    return proc


def _die_with_parent() -> None:
    """In the docserver child: get SIGTERM if ``docagents up`` dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the docserver then outlives a killed `up`; Ctrl+C still works


def _stop_docserver(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(_DOCSERVER_STOP_S)
        except subprocess.TimeoutExpired:
            log.warning("docserver_killed", pid=proc.pid)
            proc.kill()
            proc.wait()
    log.info("docserver_stopped", pid=proc.pid, exit_code=proc.returncode)
