"""Starting the worker template (the forkserver), with the standard library only.

Every worker is a fork of one template process that imported the worker's modules
once (:mod:`manager.workers.preload`, about half a second). ``docagents manager``
and ``docagents up`` call :func:`start_early` before they import anything heavy
(pydantic, structlog, psycopg: another half second), so the two imports run side
by side on two cores instead of one after the other: a restarted manager has its
template ready about when it has read its database, not half a second later
(crash recovery). :class:`~manager.workers.processes.WorkerFleet` then finds the template
running and keeps it.

The template inherits the environment of the moment it starts, so the secrets
(:data:`SECRET_ENV_VARS`, invariant 6) and systemd's notification variables
(:data:`NOTIFY_ENV_VARS`: only the manager talks to systemd) are taken out first.
:func:`start_early` puts them back for the manager's own settings and notifier;
the manager removes them again before it starts anything else.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import PurePath
from typing import Literal

__all__ = [
    "DEFAULT_PRELOAD",
    "NOTIFY_ENV_VARS",
    "PRELOAD_LLM_VAR",
    "SECRET_ENV_VARS",
    "ensure_template",
    "scrub_secret_environment",
    "start_early",
]

#: Environment variables a child process must never inherit (invariant 6; the
#: master agent token and JWT secrets too: a worker gets a credential for its life).
SECRET_ENV_VARS = (
    "DATABASE_URL",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_KEY",
    "PGPASSWORD",
    "PGSERVICEFILE",
    "PGPASSFILE",
    "DOCSERVER_AGENT_TOKEN",
    "DOCSERVER_JWT_SECRET",
    "SUPABASE_JWT_SECRET",
)
#: systemd's notification variables: the manager's alone (no worker may notify).
NOTIFY_ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
#: Modules the forkserver imports once; every worker is a fork of that process.
DEFAULT_PRELOAD = ("manager.workers.preload",)
#: The variable that tells the template to load the OpenAI client (``1``/``0``; unset:
#: the template reads the extractor from the settings).
PRELOAD_LLM_VAR = "DOCAGENTS_PRELOAD_LLM"
#: The commands that run a manager, and so want the template at once.
_MANAGER_COMMANDS = frozenset({"manager", "up"})

Template = tuple[tuple[str, ...], str]

_lock = threading.Lock()
#: (pid, template) of the forkserver started here, to tell it from one started by
#: other code of the same process (without the template) or with another template.
_started: tuple[int | None, Template] | None = None


def scrub_secret_environment() -> list[str]:
    """Remove secrets from ``os.environ`` (invariant 6); returns the names."""
    removed = [name for name in SECRET_ENV_VARS if name in os.environ]
    for name in removed:
        del os.environ[name]
    return removed


@contextlib.contextmanager
def _set_aside_from_children() -> Iterator[None]:
    names = (*SECRET_ENV_VARS, *NOTIFY_ENV_VARS)
    kept = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(kept)


def ensure_template(
    preload: tuple[str, ...] = DEFAULT_PRELOAD,
) -> Literal["kept", "started", "replaced"]:
    """Have the forkserver running with ``preload`` and the current preload-LLM choice.

    ``kept``: the right one was running. ``replaced``: one started by other code of
    this process (without the template) or with another template was stopped first
    (CPython waits there until that forkserver's children are gone). The caller
    scrubs the secrets from the environment first.
    """
    global _started
    server = multiprocessing.forkserver._forkserver  # type: ignore[attr-defined]
    template = (preload, os.environ.get(PRELOAD_LLM_VAR, ""))
    with _lock:
        running = server._forkserver_pid
        if running is not None and _started == (running, template):
            return "kept"
        if running is not None:
            server._stop()
        multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
        server.ensure_running()
        _started = (server._forkserver_pid, template)
        return "started" if running is None else "replaced"


def start_early(argv: Sequence[str]) -> None:
    """For ``docagents manager`` / ``docagents up``: start the template now.

    Anything that goes wrong is left to the fleet's own start, which reports it.
    """
    if len(argv) < 2 or argv[1] not in _MANAGER_COMMANDS:
        return
    if any(arg in ("-h", "--help") for arg in argv[2:]):
        return
    if PurePath(argv[0]).name not in ("docagents", "cli.py"):
        return
    if _database_refuses(os.environ.get("DATABASE_URL", "")):
        return  # the start fails at once; a template would only compete for the CPU
    with contextlib.suppress(OSError, ValueError), _set_aside_from_children():
        ensure_template()


def _database_refuses(url: str) -> bool:
    """Whether nothing listens at a ``postgresql://`` URL's address (an IP or localhost).

    A cheap look (at most a fifth of a second, no name resolution) so that a
    manager pointed at a database that is not there says so without first
    starting its workers' template; anything unclear counts as "not refused".
    """
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or "," in parts.netloc:
            return False
        host, port = parts.hostname, parts.port or 5432
    except ValueError:
        return False
    if host not in ("localhost", "127.0.0.1", "::1") and not _is_ip(host):
        return False
    try:
        with socket.create_connection((host or "localhost", port), timeout=0.2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _is_ip(host: str | None) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return True
