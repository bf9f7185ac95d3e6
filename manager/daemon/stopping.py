"""How a manager stops: hand its agents over first when it can, then shut down.

SIGTERM beside other managers hands the agents over before stopping (a rolling
restart).

The supervisor decides whether to
(:meth:`~manager.supervise.drain.DrainRules.hands_over_at_shutdown`: this
manager holds its lease, runs workers, and another live manager has a free
slot); this shell starts the drain and waits until every life here ended, the
drain's bound (``DRAIN_TIMEOUT_S`` + ``SHUTDOWN_TIMEOUT_S``) passed, or a second
SIGTERM/SIGINT asks to skip the rest.

Then :func:`shut_down`: every worker detaches concurrently within
``SHUTDOWN_TIMEOUT_S`` (SIGKILL what is left), their rows end, the writer
flushes; a second signal kills every worker at once (exit code 1).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from manager.errors import StoreError

if TYPE_CHECKING:
    from manager.daemon.driver import ManagerDaemon

__all__ = ["hand_over_before_stop", "shut_down"]

#: After SIGKILL, how long to wait for the killed workers' exits to be reaped.
REAP_TIMEOUT_S = 3.0

log = structlog.get_logger(__name__)


async def hand_over_before_stop(
    daemon: ManagerDaemon, requests: MemoryObjectReceiveStream[int]
) -> None:
    """Drain make-before-break if the supervisor says so, and wait for its end."""
    if not daemon.supervisor.hands_over_at_shutdown():
        return
    daemon.leases.start_draining("SIGTERM")
    daemon.check_all_stopped()
    bound = daemon.settings.drain_timeout_s + daemon.settings.shutdown_timeout_s
    with anyio.move_on_after(bound):
        async with anyio.create_task_group() as tg:

            async def second_signal() -> None:
                async for signum in requests:
                    if signum in (signal.SIGTERM, signal.SIGINT):
                        log.warning("manager_handover_skipped", lives=daemon.supervisor.lives)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(second_signal)
            await daemon.drained.wait()
            tg.cancel_scope.cancel()
    log.info("manager_handed_over", left=daemon.supervisor.lives)


async def shut_down(daemon: ManagerDaemon, requests: MemoryObjectReceiveStream[int]) -> int:
    """Stop every worker, end their lives, flush; the exit code (1 after a second signal)."""
    daemon.dispatch(daemon.supervisor.shutdown())
    daemon.check_all_stopped()
    code = 0
    async with anyio.create_task_group() as tg:

        async def second_signal() -> None:
            nonlocal code
            async for signum in requests:
                if signum in (signal.SIGUSR1, signal.SIGUSR2):
                    continue
                log.warning("manager_killing_workers", signal=signal.Signals(signum).name)
                code = 1
                daemon.launcher.kill_all()
                return

        tg.start_soon(second_signal)
        with anyio.move_on_after(daemon.settings.shutdown_timeout_s):
            await daemon.all_stopped.wait()
        if not daemon.all_stopped.is_set():
            killed = daemon.launcher.kill_all()
            log.warning("shutdown_timeout_workers_killed", killed=killed)
            with anyio.move_on_after(REAP_TIMEOUT_S):
                await daemon.all_stopped.wait()
        tg.cancel_scope.cancel()
    with anyio.move_on_after(daemon.settings.shutdown_timeout_s / 2):
        try:
            await daemon.writer.flush()
        except StoreError as exc:
            log.warning("shutdown_flush_failed", error=str(exc), pending=daemon.writer.pending)
    return code
