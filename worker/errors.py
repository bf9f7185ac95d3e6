"""The worker package's exceptions: one tree, rooted at :class:`WorkerError`.

Foreign exceptions are translated where they enter the worker, with ``raise ...
from``: websockets' and the OS's in :mod:`worker.connection`, the OpenAI client's in
:mod:`worker.extract.llm_client`, a bad pipe frame in :mod:`worker.protocol`. Callers
catch these names, never a library's.

::

    WorkerError
    ├── ProtocolError          a pipe carried bytes that are not one valid message
    ├── ConnectionLost         the websocket could not be opened, or a session failed
    │   └── SyncRejected       the server sent a Y.js message the decoder refused
    ├── AccessRefused          the server refused this agent's credential (not retried)
    │   ├── CredentialInUse    its connection is still open on the server (4409; retried a while)
    │   └── Fenced             a newer agent life took the document (close code 4412)
    └── LlmCallFailed          one call to the model server failed (may succeed later)
        └── LlmRequestRefused  the server refused the request itself (same answer again)

This module imports nothing of the worker's, so every module may import it; the
manager sees :class:`ProtocolError` through :mod:`worker.protocol`.
"""

from __future__ import annotations

__all__ = [
    "AccessRefused",
    "ConnectionLost",
    "CredentialInUse",
    "Fenced",
    "LlmCallFailed",
    "LlmRequestRefused",
    "ProtocolError",
    "SyncRejected",
    "WorkerError",
]


class WorkerError(Exception):
    """Anything the worker package raises on purpose."""


class ProtocolError(WorkerError, ValueError):
    """A pipe carried bytes that are not one valid message (oversized, malformed,
    unknown, or a message the receiving side never expects)."""


class ConnectionLost(WorkerError):
    """The websocket could not be opened, or a session ended abnormally; the
    connection retries after a backoff."""


class SyncRejected(ConnectionLost):
    """The server sent a Y.js message that could not be decoded or applied; the
    socket is closed and the connection re-established."""


class AccessRefused(WorkerError):
    """The server refused this agent's credential (close codes 4401, 4403, 4409);
    reconnecting with it cannot help, so the worker exits and its manager starts a
    new life with a new credential."""


class CredentialInUse(AccessRefused):
    """The server still holds a connection with this life's credential (close code
    4409). Usually it is this worker's own previous socket, given up on the client
    side (a handshake that timed out on a loaded host) and not yet closed on the
    server's; so it is retried for a while before it counts as refused."""


class Fenced(AccessRefused):
    """A newer agent life of this document connected (close code 4412): this one
    must not write again, and exits without reconnecting."""


class LlmCallFailed(WorkerError):
    """One call to the model server failed: a timeout, a lost connection, a 429 or a
    5xx. The same request may succeed later.

    ``reason`` is short and safe to store (no response body); ``retry_after_s`` is
    the server's ``Retry-After``, when it sent one.
    """

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class LlmRequestRefused(LlmCallFailed):
    """The model server refused the request itself (a 4xx other than 429): the same
    request would be refused again."""
