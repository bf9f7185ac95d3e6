"""Foreground entry points: ``docagents manager`` and ``docagents up``.

``docagents up`` runs the whole stack on one host, in the foreground: the
embedded Postgres (or ``DATABASE_URL``), the migrations, the docserver as a child
process (``python -m manager.cli docserver``), and the manager in this process.
With ``SUPABASE_URL`` + ``SUPABASE_SERVICE_KEY`` (and no ``DATABASE_URL``) there
is no local Postgres and no migration step (that needs a direct connection:
``DATABASE_URL=... docagents migrate``); the docserver gets the Supabase URL
and key. Ctrl+C stops the manager first (its workers leave their documents
while the docserver is still there), then the docserver, then releases the
embedded Postgres: nothing is left running.

Invariant 6: the database credentials are removed from ``os.environ`` before any
child starts (the forkserver copies the environment it starts with); the
docserver gets its credentials explicitly, workers never. The sd_notify
variables are taken out of the environment too, so no child talks to systemd
in the manager's name.

Exit codes (the ``manager``/``up`` commands): 0 after a clean stop, 1 after a
second signal, 78 (:data:`~manager.cli.exits.EX_CONFIG`) when the configuration
cannot work (systemd: ``RestartPreventExitStatus=78``, no restart loop), 69
(:data:`~manager.cli.exits.EX_UNAVAILABLE`) when the database is unreachable at
start (systemd restarts later).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import structlog

from manager.backends import select_backend
from manager.cli.agent_token import load_or_create_agent_token
from manager.cli.exits import EX_CONFIG, EX_UNAVAILABLE
from manager.config import Settings
from manager.daemon.run import run_manager
from manager.database import database_conninfo
from manager.errors import ConfigurationError, DocagentsError
from manager.ops.proctitle import printable_id, set_title
from manager.ops.sdnotify import SystemdNotifier
from manager.secret_env import spawn_env
from manager.workers.forkserver import NOTIFY_ENV_VARS, scrub_secret_environment

__all__ = ["EX_CONFIG", "EX_UNAVAILABLE", "run_manager_foreground", "run_up"]

log = structlog.get_logger(__name__)

#: How long the docserver gets to stop after SIGTERM before SIGKILL.
_DOCSERVER_STOP_S = 5.0
#: How long `up` waits for its docserver to listen before starting the manager anyway.
_DOCSERVER_LISTEN_S = 30.0
_PR_SET_PDEATHSIG = 1


def take_systemd_notifier() -> SystemdNotifier:
    """This process's notifier; its variables leave ``os.environ`` (no child sees them)."""
    notifier = SystemdNotifier()
    for name in NOTIFY_ENV_VARS:
        os.environ.pop(name, None)
    return notifier


def check_start(settings: Settings, *, needs_home: bool) -> None:
    """Refuse (ConfigurationError, exit 78) what cannot work, before anything starts.

    Without an agent token the workers would join their documents as people (and keep
    them 'active' forever); an unwritable home fails later, in a restart loop.
    """
    if settings.docserver_agent_token is None:
        raise ConfigurationError(
            "DOCSERVER_AGENT_TOKEN is not set: the manager signs each agent's credential "
            "with it, and the docserver must have the same value"
        )
    if needs_home:
        check_home_writable(settings.docagents_home)


def check_home_writable(home: Path) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"DOCAGENTS_HOME {home} is not writable ({exc.strerror or exc})"
        ) from exc


def run_manager_foreground(settings: Settings) -> int:
    """``docagents manager``: the daemon alone, on the selected backend; the schema must exist."""
    kind = select_backend(settings)  # a configuration error, before anything starts
    check_start(settings, needs_home=kind == "embedded")
    set_title(f"docagents manager {printable_id(settings.manager_id)}")
    notifier = take_systemd_notifier()
    scrub_secret_environment()
    return anyio.run(functools.partial(run_manager, settings, notifier=notifier))


def run_up(settings: Settings) -> int:
    """``docagents up``: database + migrations + docserver + manager, in the foreground."""
    from manager.store.migrations import apply_migrations

    kind = select_backend(settings)
    check_home_writable(settings.docagents_home)
    set_title(f"docagents manager {printable_id(settings.manager_id)}")
    notifier = take_systemd_notifier()
    for name in ("DOCSERVER_JWT_SECRET", "SUPABASE_JWT_SECRET"):
        _KEPT_FOR_DOCSERVER[name] = os.environ.get(name, "")
    scrub_secret_environment()
    token = settings.docserver_agent_token
    if token is None:
        token = load_or_create_agent_token(settings.docagents_home)
        settings = settings.model_copy(update={"docserver_agent_token": token})
    manager = functools.partial(run_manager, settings, notifier=notifier)
    if kind == "supabase":
        url, key = settings.supabase_url, settings.supabase_service_key
        assert url is not None and key is not None
        log.info("up_on_supabase", migrations="run `docagents migrate` with DATABASE_URL once")
        credentials = {"SUPABASE_URL": url, "SUPABASE_SERVICE_KEY": key.get_secret_value()}
        docserver = _start_docserver(credentials, token.get_secret_value())
        try:
            _wait_listening(docserver, settings)
            return anyio.run(manager)
        finally:
            _stop_docserver(docserver)
    with database_conninfo(settings) as conninfo:
        applied = anyio.run(apply_migrations, conninfo)
        if applied:
            log.info("migrations_applied", versions=applied)
        docserver = _start_docserver({"DATABASE_URL": conninfo}, token.get_secret_value())
        try:
            _wait_listening(docserver, settings)
            return anyio.run(functools.partial(manager, conninfo))
        finally:
            _stop_docserver(docserver)


def _start_docserver(credentials: dict[str, str], token: str) -> subprocess.Popen[bytes]:
    # the secrets go through a pipe, never through its environment (manager.secret_env)
    handed = {**_jwt_secrets(), **credentials, "DOCSERVER_AGENT_TOKEN": token}
    env, secrets_fd = spawn_env(os.environ, handed)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "manager.cli", "docserver"],
            env=env,
            pass_fds=(secrets_fd,),
            # Its own process group: Ctrl+C reaches us, and we stop it after the
            # manager (workers leave their documents first).
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        os.close(secrets_fd)
    log.info("docserver_started", pid=proc.pid)
    return proc


def _wait_listening(proc: subprocess.Popen[bytes], settings: Settings) -> None:
    """Until the docserver accepts connections, so the first agents find it there.

    Agents of documents still active in the database start as soon as the manager
    has recovered; before the docserver listens they would only fail and retry.
    Raises :class:`DocagentsError` if the docserver exits first; after
    ``_DOCSERVER_LISTEN_S`` the manager starts anyway (its workers retry).
    """
    host = settings.docserver_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (a wildcard listens on loopback too)
        host = "127.0.0.1"
    deadline = time.monotonic() + _DOCSERVER_LISTEN_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DocagentsError(f"the docserver exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, settings.ws_port), timeout=0.5):
                log.info("up_docserver_ready", pid=proc.pid, port=settings.ws_port)
                return
        except OSError:
            time.sleep(0.05)
    log.warning("docserver_not_listening", pid=proc.pid, waited_s=_DOCSERVER_LISTEN_S)


def _jwt_secrets() -> dict[str, str]:
    """The docserver's JWT secrets, kept aside by the manager's own scrub."""
    return {name: value for name, value in _KEPT_FOR_DOCSERVER.items() if value}


#: Filled by :func:`run_up` before the environment is scrubbed.
_KEPT_FOR_DOCSERVER: dict[str, str] = {}


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
