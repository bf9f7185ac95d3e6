"""The function every worker process starts in (the forkserver ``Process`` target).

Kept tiny so the manager can name it without importing the worker's modules; the
forkserver has them preloaded (:mod:`manager.worker_template`).
"""

from __future__ import annotations

import gc
from multiprocessing.connection import Connection

from worker.config import WorkerSettings

__all__ = ["run_worker"]


def run_worker(settings: WorkerSettings, document_id: str, agent_id: str, conn: Connection) -> None:
    """Re-enable the garbage collector (the template disabled it), then run the agent."""
    gc.enable()
    from worker.main import process_main

    process_main(settings, document_id, agent_id, conn)
