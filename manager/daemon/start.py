"""The manager's start: the state it begins from, and how a start failure comes out.

:func:`read_start_state` takes this ``MANAGER_ID``'s lease (refusing to start
beside a live process holding it), recovers the lives a previous, dead run of
this manager left behind (:func:`manager.supervise.recovery.recover`), ends the
lives of every expired lease, and reads the latest event of every document and
the event cursor. :func:`unwrap_start_error` lets a configuration error raised
inside the daemon's task group reach the CLI as itself. :func:`new_supervisor`
builds the decision core from the settings.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import anyio

from manager.backends import ActivitySource, ActivitySourceFactory
from manager.config import Settings
from manager.errors import ConfigurationError, DocagentsError, SchemaMissing
from manager.fleet.keeper import LeaseKeeper
from manager.store.base import ActivityEvent, AgentRow, Store
from manager.supervise.lives import monotonic
from manager.supervise.recovery import recover
from manager.supervise.supervisor import RestartPolicy, Supervisor

__all__ = [
    "NO_SCHEMA",
    "StartState",
    "listener_factory",
    "new_supervisor",
    "package_version",
    "read_start_state",
    "unwrap_start_error",
]

#: What a manager says when the database was never migrated.
NO_SCHEMA = "the database has no docagents schema: run `docagents migrate` first"

#: The lives ended at start, the latest event of every document, the event cursor.
StartState = tuple[list[AgentRow], list[ActivityEvent], int]


def new_supervisor(settings: Settings) -> Supervisor:
    """The supervisor of this manager, without its lease until :func:`read_start_state`."""
    return Supervisor(
        settings.max_concurrent_agents,
        min_residency_s=settings.min_residency_s,
        policy=RestartPolicy(
            backoff_min_s=settings.restart_backoff_min_s,
            backoff_max_s=settings.restart_backoff_max_s,
            stable_s=settings.restart_stable_s,
            crash_loop_restarts=settings.crash_loop_restarts,
            crash_loop_window_s=settings.crash_loop_window_s,
            claim_retry_s=settings.claim_retry_s,
        ),
        new_agent_id=lambda: "agent-" + uuid.uuid4().hex,
        manager_id=settings.manager_id,
        holds_lease=False,  # until the lease is taken at start
        placement_delay_s=min(1.0, settings.lease_renew_s),
        drain_timeout_s=settings.drain_timeout_s,
    )


async def read_start_state(
    leases: LeaseKeeper, store: Store, supervisor: Supervisor, manager_id: str
) -> StartState:
    """Take the lease, recover, sweep expired leases, read the documents' latest events.

    A database without the schema is a :class:`~manager.errors.ConfigurationError`
    (run ``docagents migrate``).
    """
    try:
        # Raises ManagerAlreadyRunning (exit 78) beside a live holder: recovery
        # only ever runs against a dead one.
        await leases.acquire()
        ended = await recover(store, manager_id)
        await leases.sweep()
        supervisor.lease_regained(monotonic())  # nothing is tracked yet
        latest, cursor = await store.latest_events()
    except SchemaMissing as exc:
        raise ConfigurationError(NO_SCHEMA) from exc
    return ended, latest, cursor


@contextlib.contextmanager
def unwrap_start_error() -> Iterator[None]:
    """A configuration error raised inside the task group comes out as itself (for the CLI)."""
    try:
        yield
    except BaseExceptionGroup as group:
        cancelled = anyio.get_cancelled_exc_class()
        leaves = _leaves(group)
        errors = [e for e in leaves if not isinstance(e, cancelled)]
        if len(errors) == 1 and isinstance(errors[0], DocagentsError):
            raise errors[0] from group
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def listener_factory(settings: Settings, store: Store, conninfo: str) -> ActivitySourceFactory:
    """The Postgres activity source (LISTEN + cursor reads), for a daemon given a conninfo."""
    from manager.events.listen import ActivityListener

    def activity_source(cursor: int) -> ActivitySource:
        return ActivityListener(
            conninfo, store, cursor=cursor, poll_interval_s=settings.poll_interval_s
        )

    return activity_source


def package_version() -> str:
    """The installed docagents version (for the metrics' info), or ``unknown``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("docagents")
    except PackageNotFoundError:
        return "unknown"
