"""The manager's process-level entry: the worker launcher, the backend, the daemon."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import structlog

from manager.backends import open_backend, select_backend
from manager.config import Settings
from manager.daemon.driver import ManagerDaemon
from manager.daemon.monitor import OnConnected
from manager.daemon.start import NO_SCHEMA
from manager.errors import ConfigurationError, SchemaMissing
from manager.ops.sdnotify import SystemdNotifier
from manager.workers.forkserver import scrub_secret_environment
from manager.workers.launcher import Target, WorkerLauncher

__all__ = ["run_manager"]

log = structlog.get_logger(__name__)


async def run_manager(
    settings: Settings,
    conninfo: str | None = None,
    *,
    ready: Callable[[], None] | None = None,
    worker_target: Target | None = None,
    on_connected: OnConnected | None = None,
    notifier: SystemdNotifier | None = None,
) -> int:
    """Run the manager on the selected backend until SIGTERM/SIGINT; return the exit code.

    ``conninfo``: a Postgres the caller already holds (``docagents up``); ignored
    when the settings select Supabase. Raises :class:`~manager.errors.ConfigurationError` for
    settings that cannot work and :class:`~manager.errors.StoreUnavailable` when
    the database cannot be reached at start. Every worker is killed on the way out.
    """
    kind = select_backend(settings)
    launcher = WorkerLauncher(target=worker_target, warm_pool=settings.warm_pool_size)
    # The secrets leave the environment before any child starts (the template,
    # if `start_early` did not start it already, and the docserver of `up`).
    scrub_secret_environment()
    try:
        async with open_backend(settings, conninfo=conninfo) as backend:
            # The worker template imports in its own process (started early by the
            # CLI) while the backend opened; recovery runs while the pool fills. A
            # database that is not there fails the start before any of that.
            await anyio.to_thread.run_sync(launcher.warm_up)
            log.info("manager_backend", kind=kind, database=backend.description)
            daemon = ManagerDaemon(
                settings,
                backend.store,
                backend.conninfo,
                launcher,
                activity_source=backend.activity_source,
                writer=backend.writer,
                notifier=notifier,
                on_connected=on_connected,
            )
            return await daemon.run(ready=ready)
    except SchemaMissing as exc:  # Supabase's connect probe finds it before the start
        raise ConfigurationError(NO_SCHEMA) from exc
    finally:
        launcher.kill_all()
