"""Where a worker's reports go: the manager's pipe, or the log when standalone."""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Protocol

import structlog

from worker.protocol import WorkerMessage, encode

__all__ = ["LogReporter", "PipeReporter", "Reporter"]

log = structlog.get_logger(__name__)


class Reporter(Protocol):
    def report(self, message: WorkerMessage) -> None: ...


class PipeReporter:
    """Sends each message over the worker's end of the manager's ``Pipe``."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.broken = False

    def report(self, message: WorkerMessage) -> None:
        if self.broken:
            return
        try:
            self._conn.send_bytes(encode(message))
        except OSError as exc:
            # The manager is gone; the pipe reader sees EOF and stops the worker.
            self.broken = True
            log.warning("manager_pipe_broken", error=repr(exc), dropped=message.type)


class LogReporter:
    """Standalone mode: reports become log lines."""

    def report(self, message: WorkerMessage) -> None:
        fields = message.model_dump(exclude={"type"})
        log.info("report_" + message.type, **fields)
