"""A stand-in worker for manager tests: speaks worker/protocol.py, needs no docserver.

Its behaviour is chosen by the document id's prefix:

- ``crash-``: exits with code 3 right after starting (no ``connected``).
- ``garbage-``: connects, then writes bytes that are not a message.
- ``deaf-``: connects, answers pings, ignores ``shutdown`` (and SIGTERM).
- ``abandon-``: connects, then reports ``activity(kind="abandoned")``.
- ``edit-``: connects, then reports an ``activity(kind="edit")`` every 50 ms.
- anything else: connects, answers pings, exits 0 on ``shutdown`` or pipe EOF.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from multiprocessing.connection import Connection

from worker.config import WorkerSettings
from worker.protocol import Activity, Connected, Metrics, Ping, Pong, Shutdown, decode, encode


def main(settings: WorkerSettings, document_id: str, agent_id: str, conn: Connection) -> None:
    started = time.perf_counter()
    if document_id.startswith("crash-"):
        sys.exit(3)
    if document_id.startswith("deaf-"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def send(message: object) -> None:
        conn.send_bytes(encode(message))  # type: ignore[arg-type]

    send(
        Connected(
            document_id=document_id,
            agent_id=agent_id,
            pid=os.getpid(),
            sync_ms=(time.perf_counter() - started) * 1000,
        )
    )
    send(Metrics(memory_mb=12.5, cpu_percent=1.0))
    if document_id.startswith("garbage-"):
        conn.send_bytes(b"\x00\xffnot a message")
    if document_id.startswith("abandon-"):
        send(Activity(kind="abandoned"))
    edits = document_id.startswith("edit-")
    while True:
        try:
            ready = conn.poll(0.05 if edits else None)
        except (EOFError, OSError):
            return
        if edits:
            send(Activity(kind="edit"))
        if not ready:
            continue
        try:
            message = decode(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if isinstance(message, Ping):
            send(Pong(seq=message.seq))
        elif isinstance(message, Shutdown) and not document_id.startswith("deaf-"):
            return


def exit_with_openai_loaded(
    settings: WorkerSettings, document_id: str, agent_id: str, conn: Connection
) -> None:
    """Exit 10 if the template had the OpenAI client loaded, else 11."""
    sys.exit(10 if "openai" in sys.modules else 11)
