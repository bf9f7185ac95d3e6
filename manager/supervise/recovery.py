"""Crash recovery: end the agent lives a previous run of this manager left behind.

On start, rows of this ``MANAGER_ID`` still live belong to a manager that died
(``kill -9``, power loss). Their workers normally exited by themselves (their
pipe closed), but one may survive; :func:`recover` kills it only if the pid
really is one of our workers — a pid can be reused by any process since — and
ends every such row with reason ``'manager_restarted'``.

Identity check (:func:`looks_like_our_worker`): the process must have been
created when the row says (``metadata.pid_create_time`` compared exactly when
recorded, else near ``connected_at``), be owned by us, and have a worker's
command line (a multiprocessing child, or a ``docagents`` worker command).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import anyio
import anyio.to_thread
import psutil
import structlog

from manager.store.base import AgentRow, Store
from manager.supervise.actions import EndReason

__all__ = ["WORKER_CMDLINE_MARKERS", "looks_like_our_worker", "recover"]

log = structlog.get_logger(__name__)

#: A worker's command line contains one of these (forkserver children inherit the
#: forkserver's command line; ``docagents worker DOC`` runs one by hand).
WORKER_CMDLINE_MARKERS = ("multiprocessing.forkserver", "multiprocessing.spawn", "docagents")
#: psutil create times are exact to the clock tick; allow a little for float noise.
_CREATE_TIME_TOLERANCE_S = 0.05
#: Without a recorded create time: the worker starts right after its claim.
_CONNECTED_AT_SLACK_S = 120.0

IsOurWorker = Callable[[int, AgentRow], bool]


def looks_like_our_worker(pid: int, row: AgentRow) -> bool:
    """True if ``pid`` is, beyond reasonable doubt, the worker of ``row``."""
    if pid <= 1 or pid == os.getpid():
        return False
    try:
        proc = psutil.Process(pid)
        created = proc.create_time()
        cmdline = " ".join(proc.cmdline())
        owner = proc.uids().real
    except psutil.Error:
        return False
    if owner != os.getuid():
        return False
    recorded = row.metadata.get("pid_create_time")
    if isinstance(recorded, int | float) and not isinstance(recorded, bool):
        if abs(created - float(recorded)) > _CREATE_TIME_TOLERANCE_S:
            return False
    elif abs(created - row.connected_at.timestamp()) > _CONNECTED_AT_SLACK_S:
        return False
    return any(marker in cmdline for marker in WORKER_CMDLINE_MARKERS)


async def recover(
    store: Store,
    manager_id: str,
    *,
    is_our_worker: IsOurWorker | None = None,
    kill_timeout_s: float = 5.0,
) -> list[AgentRow]:
    """Kill surviving workers of this manager's live rows and end those rows.

    Returns the rows ended (as they read after ending). Raises the store's
    errors (the manager cannot start without its database).
    """
    check = is_our_worker or looks_like_our_worker
    rows = await store.live_agents_of_manager(manager_id)
    async with anyio.create_task_group() as tg:  # survivors are killed side by side
        for row in rows:
            if row.agent_pid is not None:
                tg.start_soon(_kill_if_ours, row, check, kill_timeout_s)
    # One round trip for all of them: a restarted manager attaches its documents
    # again right after this.
    ended = await store.end_agent_lives(
        [row.agent_id for row in rows], "disconnected", str(EndReason.MANAGER_RESTARTED)
    )
    for row in rows:
        log.info(
            "stale_agent_ended",
            document_id=row.document_id,
            agent_id=row.agent_id,
            pid=row.agent_pid,
            status=row.status,
        )
    if rows:
        log.info("recovery_done", manager_id=manager_id, ended=len(ended))
    return ended


async def _kill_if_ours(row: AgentRow, check: IsOurWorker, timeout_s: float) -> None:
    pid = row.agent_pid
    assert pid is not None
    try:
        proc = psutil.Process(pid)
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            return
    except psutil.NoSuchProcess:
        return
    except psutil.Error as exc:
        log.warning("stale_worker_unreadable", pid=pid, agent_id=row.agent_id, error=str(exc))
        return
    if not check(pid, row):
        log.warning(
            "stale_pid_not_our_worker",
            pid=pid,
            agent_id=row.agent_id,
            document_id=row.document_id,
        )
        return
    try:
        proc.send_signal(signal.SIGKILL)
    except psutil.NoSuchProcess:
        return
    except psutil.Error as exc:
        log.warning("stale_worker_kill_failed", pid=pid, agent_id=row.agent_id, error=str(exc))
        return
    try:
        await anyio.to_thread.run_sync(proc.wait, timeout_s)
    except psutil.TimeoutExpired:
        log.warning("stale_worker_still_running", pid=pid, agent_id=row.agent_id)
    else:
        log.info("stale_worker_killed", pid=pid, agent_id=row.agent_id, document_id=row.document_id)
