"""The warm pool: workers forked and booted ahead of need, waiting for an assignment.

Each pooled worker runs :func:`manager.workers.entry.run_pooled`: forked from the
template, booted (its first moments' page faults paid in advance), blocked on its
pipe. Starting a worker takes one from the pool and sends it its assignment, so
the fork and the boot are off the attach path. A background thread refills the
pool, one boot at a time, and only once no start ran dry for a moment: during a
burst the forkserver and the CPU serve the workers that are wanted now.

Pooled workers count against nothing (no agent, no database row) and exit at EOF
on their pipe like any worker, so a dead manager leaves none behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import psutil
import structlog

from manager.workers.forkserver import TemplateProcess

__all__ = ["Child", "WarmPool"]

log = structlog.get_logger(__name__)

#: A started child of the template and the manager's end of its pipe.
Child = tuple[TemplateProcess, Connection]

#: After a failed pool start, wait this long before the next try.
_RETRY_S = 1.0
#: How long the refill waits at most for a pooled worker to finish its boot.
_BOOT_WAIT_S = 1.0
#: The pool refills only after this long without a start that found it empty.
_QUIET_S = 0.25


class WarmPool:
    """Up to ``size`` booted workers; :meth:`take` one, a thread refills.

    ``spawn`` forks one pooled worker (blocking). Thread-safe: :meth:`take` and
    :meth:`note_miss` run in the event loop's thread, the refill in its own.
    """

    def __init__(self, size: int, spawn: Callable[[], Child]) -> None:
        if size < 0:
            raise ValueError("warm_pool must be >= 0")
        self.size = size
        self._spawn = spawn
        self._pool: list[Child] = []
        self._changed = threading.Condition()
        self._closed = False
        self._last_demand = 0.0
        self._refiller: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._pool)

    def start(self) -> None:
        """Start the refill thread (once; not after :meth:`close`; not for size 0)."""
        with self._changed:
            if self.size and self._refiller is None and not self._closed:
                self._refiller = threading.Thread(
                    target=self._refill, name="docagents-warm-pool", daemon=True
                )
                self._refiller.start()

    def close(self) -> None:
        """Stop refilling and let the pooled workers go (idempotent)."""
        with self._changed:
            self._closed = True
            pooled, self._pool = self._pool, []
            self._changed.notify_all()
        for proc, conn in pooled:
            conn.close()  # EOF: the pooled worker exits by itself
            if proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)

    def take(self) -> Child | None:
        """A live pooled worker, or None; wakes the refill thread."""
        with self._changed:
            while self._pool:
                proc, conn = self._pool.pop(0)
                self._changed.notify_all()
                if proc.is_alive():
                    return proc, conn
                conn.close()
        return None

    def note_miss(self) -> None:
        """The pool ran dry: a burst; the refill waits until it is over."""
        with self._changed:
            self._last_demand = time.monotonic()

    def _refill(self) -> None:
        while True:
            with self._changed:
                while not self._closed:
                    if len(self._pool) >= self.size:
                        self._changed.wait()
                        continue
                    quiet_for = time.monotonic() - self._last_demand
                    if quiet_for >= _QUIET_S:
                        break
                    self._changed.wait(_QUIET_S - quiet_for)
                if self._closed:
                    return
            try:
                child = self._spawn()
            except (OSError, ValueError, RuntimeError, EOFError) as exc:
                log.warning("warm_pool_start_failed", error=repr(exc))
                time.sleep(_RETRY_S)
                continue
            _wait_booted(child[0].pid)  # one boot at a time: a spike would slow real starts
            with self._changed:
                if not self._closed:
                    self._pool.append(child)
                    continue
            child[1].close()
            return


def _wait_booted(pid: int | None) -> None:
    """Wait until a pooled worker sleeps (booted, blocked on its pipe), at most a second."""
    if pid is None:
        return
    deadline = time.monotonic() + _BOOT_WAIT_S
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_SLEEPING:
                return
        except psutil.Error:
            return
        time.sleep(0.005)
