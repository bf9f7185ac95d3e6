"""The worker launcher: starts this manager's workers from the template and knows the live ones.

:class:`WorkerLauncher` makes sure the template runs (:func:`ensure_template`,
with the secrets out of the environment first), keeps the warm pool
(:mod:`manager.workers.pool`), hands out one
:class:`~manager.workers.process.WorkerProcess` per agent life, and kills every
live worker when the manager goes down. The manager's process never forks: each
worker is a :class:`~manager.workers.forkserver.TemplateProcess` with one duplex
pipe, started by :func:`manager.workers.entry.run_pooled`, which waits on the pipe
for its assignment (the target, the settings, the document).

With :attr:`WorkerLauncher.memory` set (a
:class:`~manager.supervise.memory.MemoryKeeper`), each worker's run also hands it
the document's extraction memory, and its ``extraction_report`` messages go to
the keeper instead of the life's ``on_message``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

import anyio
import structlog

from manager.workers.entry import run_pooled, run_worker
from manager.workers.forkserver import (
    DEFAULT_PRELOAD,
    PRELOAD_LLM_VAR,
    TemplateProcess,
    ensure_template,
    scrub_secret_environment,
)
from manager.workers.pool import Child, WarmPool
from manager.workers.process import WorkerProcess
from worker.config import WorkerSettings

if TYPE_CHECKING:
    from manager.supervise.memory import MemoryKeeper

__all__ = ["DEFAULT_WARM_POOL", "Target", "WorkerLauncher"]

log = structlog.get_logger(__name__)

#: Workers kept started and booted ahead of need (:mod:`manager.workers.pool`).
DEFAULT_WARM_POOL = 4

#: What a worker runs once assigned: ``target(settings, document_id, agent_id, conn)``.
Target = Callable[[WorkerSettings, str, str, Connection], None]


class WorkerLauncher:
    """The template, the warm pool and the set of live workers of this manager."""

    def __init__(
        self,
        *,
        target: Target | None = None,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        warm_pool: int = DEFAULT_WARM_POOL,
        preload_llm: bool | None = None,
    ) -> None:
        """``target``: what each worker runs (:func:`manager.workers.entry.run_worker`
        unless a test stands in). ``preload_llm``: load the OpenAI client into the
        template (True), or not (False); None leaves it to the environment (see
        :mod:`manager.workers.preload`).
        """
        self.target = run_worker if target is None else target
        self.preload = preload
        self.preload_llm = preload_llm
        self.workers: set[WorkerProcess] = set()
        #: Hands each life its document's extraction memory and stores its reports.
        self.memory: MemoryKeeper | None = None
        self._pool = WarmPool(warm_pool, lambda: _start_child(warm=True))
        #: Starts served from the pool / forked on demand (the attach benchmark reads them).
        self.pool_hits = 0
        self.pool_misses = 0

    @property
    def warm_pool(self) -> int:
        """How many workers the pool keeps booted ahead of need."""
        return self._pool.size

    @property
    def pooled(self) -> int:
        """How many booted workers wait in the pool right now."""
        return len(self._pool)

    def warm_up(self) -> None:
        """Start the template now (blocking: it imports the preload modules), then the pool.

        The template inherits ``os.environ`` as it is now: the secrets are removed
        first, whatever the caller did.
        """
        removed = scrub_secret_environment()
        if removed:
            log.warning("secret_environment_removed_before_forkserver", names=removed)
        if self.preload_llm is not None:
            # The template reads it from the environment it inherits.
            os.environ[PRELOAD_LLM_VAR] = "1" if self.preload_llm else "0"
        # Kept when `docagents manager` started it early (forkserver.start_early);
        # one started by other code without our template, or with another, is replaced.
        if ensure_template(self.preload) == "replaced":
            log.info("forkserver_restarted_with_template")
        self._pool.start()

    def process(self, settings: WorkerSettings, document_id: str, agent_id: str) -> WorkerProcess:
        """A worker for one agent life, not started yet."""
        return WorkerProcess(self, settings, document_id, agent_id)

    async def launch(self, assignment: bytes) -> Child:
        """A started worker that has been sent ``assignment`` (the pickled target and
        arguments): a pooled one, or else one forked now (in a thread)."""
        pooled = self._pool.take()
        if pooled is not None:
            proc, parent = pooled
            try:
                parent.send_bytes(assignment)
            except OSError:  # it died since: start one cold
                parent.close()
            else:
                self.pool_hits += 1
                return proc, parent
        self._pool.note_miss()
        proc, parent = await anyio.to_thread.run_sync(lambda: _start_child(warm=False))
        self.pool_misses += 1
        with contextlib.suppress(OSError):  # it died at once: its run() reports the exit
            parent.send_bytes(assignment)
        return proc, parent

    def kill_all(self) -> int:
        """SIGKILL every live worker at once (second signal, failing shutdown, the end).

        The warm pool is closed too: the manager is going down.
        """
        self._pool.close()
        killed = 0
        for worker in list(self.workers):
            if worker.kill():
                killed += 1
        return killed


def _start_child(*, warm: bool) -> Child:
    """Fork one worker that waits for its assignment (blocking: the forkserver's handshake).

    ``warm``: for the pool (it boots while it waits); else its assignment follows at once.
    """
    parent, child = multiprocessing.Pipe(duplex=True)
    proc = TemplateProcess(
        target=run_pooled, args=(child, warm), name="docagents-worker", daemon=True
    )
    try:
        proc.start()
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    return proc, parent
