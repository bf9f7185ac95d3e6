"""The functions every worker process starts in (the forkserver ``Process`` targets).

Kept tiny so the manager can name them without importing the worker's modules;
the forkserver has them preloaded (:mod:`manager.workers.preload`).

:func:`run_pooled` is what :class:`~manager.workers.launcher.WorkerLauncher`
starts: the worker boots, waits on its pipe for its assignment (the target, the
settings, the document), then runs it. A worker in the warm pool spends its wait
there; at EOF (the manager closed the pool or died) it exits without having done
anything.
"""

from __future__ import annotations

import gc
import pickle
import sys
from multiprocessing.connection import Connection

from manager.ops.proctitle import set_title, worker_title
from worker.config import WorkerSettings

__all__ = ["run_pooled", "run_worker"]


def run_worker(settings: WorkerSettings, document_id: str, agent_id: str, conn: Connection) -> None:
    """Re-enable the garbage collector (the template disabled it), then run the agent."""
    gc.enable()
    set_title(worker_title(document_id, agent_id))
    from worker.main import process_main

    process_main(settings, document_id, agent_id, conn)


def run_pooled(conn: Connection, warm: bool = True) -> None:
    """Boot (a pooled worker), wait for the assignment on ``conn``, run it with the same pipe.

    ``warm=False``: started for an assignment that follows at once; no boot ahead.
    """
    # Boot ahead only in our template: in a forkserver started without it (by other
    # code in the same process) that would import the whole worker, for nothing.
    if warm:
        set_title("docagents warm")
    if warm and "manager.workers.preload" in sys.modules and not conn.poll(0):
        _boot()
    try:
        data = conn.recv_bytes()
    except (EOFError, OSError):
        return
    # The manager is the only writer of this pipe until the assignment is taken.
    target, settings, document_id, agent_id = pickle.loads(data)  # noqa: S301
    target(settings, document_id, agent_id, conn)


def _boot() -> None:
    """Touch, in advance, what the first moments of every worker touch.

    A fresh fork pays a copy-on-write page fault on the first write to every shared
    page (logging's registries, the event loop machinery, allocator arenas, the
    websocket and Y.js sync code); one agent session against a loopback server
    (:func:`worker.main.warm_up`), before the worker is needed, takes that work off
    the attach path.
    """
    import anyio

    from worker.logs import configure_logging, log_format_from_environment
    from worker.main import warm_up

    configure_logging(log_format_from_environment(), "WARNING")
    anyio.run(warm_up, backend="asyncio")
