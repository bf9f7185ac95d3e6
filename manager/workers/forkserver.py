"""The worker template (the forkserver) and the one ``Process`` class started from it.

Every worker is a fork of one template process that imported the worker's modules
once (:mod:`manager.workers.preload`, about half a second). ``docagents manager``
and ``docagents up`` call :func:`start_early` before they import anything heavy
(pydantic, structlog, psycopg: another half second), so the two imports run side
by side on two cores instead of one after the other: a restarted manager has its
template ready about when it has read its database (crash recovery).
:class:`~manager.workers.launcher.WorkerLauncher` then finds the template running
and keeps it.

The template inherits the environment of the moment it starts, so the secrets
(:data:`SECRET_ENV_VARS`, invariant 6) and systemd's notification variables
(:data:`NOTIFY_ENV_VARS`: only the manager talks to systemd) are taken out first.
:func:`start_early` puts them back for the manager's own settings and notifier;
the manager removes them again before it starts anything else.

CPython internals, pinned: this is the one module that uses private parts of
``multiprocessing``, because its public API cannot do two things the manager needs.

- :class:`TemplateProcess` starts its child through ``popen_forkserver.Popen``
  with ``_launch`` overridden, so that the child does not re-import the manager's
  ``__main__`` (the CLI with its database and embedded-Postgres modules: about
  100 ms and tens of MiB of private memory per worker, for nothing a worker uses).
  ``spawn.get_preparation_data`` has no public switch for that.
- It removes itself from ``multiprocessing.process._children``: ``Process.start()``
  polls every registered child first (one ``select`` each), which makes a start
  cost O(workers) and a burst of starts O(n²). The launcher watches its workers
  itself (their sentinels) and kills them on shutdown; a worker whose manager died
  leaves at EOF on its pipe.
- :func:`ensure_template` reads the forkserver's pid and stops one started without
  our template (``forkserver._forkserver``, ``_forkserver_pid``, ``_stop``).

The parts used are the same in every version of :data:`VERIFIED_PYTHONS`
(``Popen._launch`` is identical, ``forkserver``'s and ``process``'s differ only
in how a child runs its exit functions), and a started ``TemplateProcess`` was
checked on each (its child has no re-imported ``__main__``, the registry does
not hold it); the test suite runs on 3.11. Python 3.14 reworked the forkserver
(an authenticated handshake, a new default start method). On any other
interpreter this module refuses to import (:func:`check_python`, a
:class:`~manager.errors.ConfigurationError`, also ``requires-python`` in
``pyproject.toml``) rather than start workers through code it never ran with.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import multiprocessing.forkserver
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from multiprocessing import context as mp_context
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing import process as mp_process
from typing import Any, Literal

from manager.errors import ConfigurationError
from manager.secret_env import is_docagents_command

__all__ = [
    "DEFAULT_PRELOAD",
    "NOTIFY_ENV_VARS",
    "PRELOAD_LLM_VAR",
    "SECRET_ENV_VARS",
    "VERIFIED_PYTHONS",
    "TemplateProcess",
    "check_python",
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
#: The interpreters whose ``multiprocessing`` internals this module was checked
#: against (implementation, major, minor; see the module docstring).
VERIFIED_PYTHONS = frozenset({("cpython", 3, 11), ("cpython", 3, 12), ("cpython", 3, 13)})


def check_python(implementation: str, version: tuple[int, int]) -> None:
    """Raise :class:`~manager.errors.ConfigurationError` unless the interpreter is verified."""
    if (implementation, *version) in VERIFIED_PYTHONS:
        return
    verified = ", ".join(f"{major}.{minor}" for _, major, minor in sorted(VERIFIED_PYTHONS))
    raise ConfigurationError(
        f"docagents starts its workers through multiprocessing internals checked only on "
        f"CPython {verified}; this is {implementation} {version[0]}.{version[1]}: "
        f"run it with one of those"
    )


check_python(sys.implementation.name, (sys.version_info.major, sys.version_info.minor))

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


class _TemplatePopen(popen_forkserver.Popen):  # type: ignore[misc]
    """``popen_forkserver.Popen`` whose child does not re-import the parent's ``__main__``.

    This is ``Popen._launch`` of the verified versions (identical in each), minus
    the two ``init_main_from_*`` entries of the preparation data.
    """

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_name", None)
        prep_data.pop("init_main_from_path", None)
        buf = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            mp_context.set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:  # noqa: PTH123 (a file descriptor)
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class TemplateProcess(mp_context.ForkServerProcess):  # type: ignore[misc]
    """A child of the template that skips ``__main__`` and ``multiprocessing``'s registry.

    Its owner watches it (``sentinel``, ``exitcode``) and kills it; nothing else
    will (see the module docstring).
    """

    @staticmethod
    def _Popen(process_obj: Any) -> _TemplatePopen:
        return _TemplatePopen(process_obj)

    def start(self) -> None:
        super().start()
        mp_process._children.discard(self)


def start_early(argv: Sequence[str]) -> None:
    """For ``docagents manager`` / ``docagents up``: start the template now.

    ``argv[0]`` must be the console script or ``manager/cli/__main__.py`` (what
    ``python -m manager.cli`` puts there): another program that imports the CLI
    starts nothing. Anything that goes wrong is left to
    :meth:`~manager.workers.launcher.WorkerLauncher.warm_up`, which reports it.
    """
    if len(argv) < 2 or argv[1] not in _MANAGER_COMMANDS:
        return
    if any(arg in ("-h", "--help") for arg in argv[2:]):
        return
    if not is_docagents_command(argv[0]):
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
