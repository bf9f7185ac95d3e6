"""Leases and fleet faults for tests.

- :func:`hold_lease`, :func:`expire_lease`: leases for tests that claim documents
  directly (``claim_document`` needs a valid lease);
- :class:`DatabaseProxy`: a TCP proxy between one manager and Postgres that a test
  cuts (every connection closed, new ones refused) and reopens;
- :class:`WriteWatcher`: a person's client in one document that records which Y.js
  client wrote each update it receives (whose agent wrote, and when).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import psycopg
from docserver_support import free_port
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pycrdt import Decoder, TransactionEvent, get_state
from ywebsocket_server import HumanClient


def hold_lease(
    target: str | psycopg.Connection[Any],
    manager_id: str,
    *,
    ttl_s: float = 3600.0,
    host: str | None = "test-host",
    pid: int | None = None,
) -> uuid.UUID:
    """Give ``manager_id`` a lease (by a new instance id) valid ``ttl_s``; its instance id."""
    instance = uuid.uuid4()
    statement = (
        "SELECT acquired AS held"
        " FROM acquire_manager_lease(%s, %s, %s, %s, %s, 0, 0, 'leading', NULL)"
    )
    params = (manager_id, instance, host, pid, ttl_s)
    if isinstance(target, str):
        with psycopg.connect(target, autocommit=True) as conn:
            row = conn.execute(statement, params).fetchone()
    else:
        row = target.execute(statement, params).fetchone()
    held = None if row is None else (row["held"] if isinstance(row, dict) else row[0])
    assert held, f"lease of {manager_id} is held by another instance"
    return instance


def expire_lease(target: str | psycopg.Connection[Any], manager_id: str) -> None:
    """Make ``manager_id``'s lease expired now (as if its manager stopped renewing)."""
    statement = "UPDATE manager_leases SET expires_at = now() WHERE manager_id = %s"
    if isinstance(target, str):
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(statement, (manager_id,))
    else:
        target.execute(statement, (manager_id,))


class DatabaseProxy:
    """A TCP proxy to the Postgres of ``database_url`` (a unix socket or a TCP port).

    :attr:`url` is ``database_url`` through the proxy. :meth:`cut` closes every
    connection through it and stops listening, so new connections are refused, as
    when a host loses its network to the database; :meth:`reopen` listens again on
    the same port. Run :meth:`run` in a task group (``await tg.start(proxy.run)``).
    """

    def __init__(self, database_url: str) -> None:
        params = conninfo_to_dict(database_url)
        host = str(params.get("host") or "/tmp")
        port = int(params.get("port") or 5432)
        #: where Postgres listens: a unix socket path, or (host, port)
        self.target: str | tuple[str, int] = (
            f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        )
        self.port = free_port()
        self.url = make_conninfo(database_url, host="127.0.0.1", port=str(self.port))
        #: connections forwarded since the start (a reopened proxy counts on)
        self.connections = 0
        self._open: anyio.CancelScope | None = None
        self._listening = anyio.Event()
        self._closed = anyio.Event()
        self._reopen = anyio.Event()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Forward until cancelled; ``task_status.started()`` once listening."""
        started = False
        while True:
            with anyio.CancelScope() as self._open:
                listener = await anyio.create_tcp_listener(
                    local_host="127.0.0.1", local_port=self.port
                )
                self._listening.set()
                if not started:
                    started = True
                    task_status.started()
                async with listener:
                    await listener.serve(self._forward)
            self._closed.set()
            await self._reopen.wait()
            self._reopen = anyio.Event()

    async def cut(self) -> None:
        """Close every forwarded connection and stop listening (returns once done)."""
        assert self._open is not None and self._listening.is_set(), "not listening"
        self._closed = anyio.Event()
        self._listening = anyio.Event()
        self._open.cancel()
        with anyio.fail_after(5):
            await self._closed.wait()

    async def reopen(self) -> None:
        """Listen again on the same port (returns once listening)."""
        self._reopen.set()
        with anyio.fail_after(5):
            await self._listening.wait()

    async def _forward(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with client:
            try:
                if isinstance(self.target, str):
                    upstream: anyio.abc.SocketStream = await anyio.connect_unix(self.target)
                else:
                    upstream = await anyio.connect_tcp(*self.target)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as tg:

                async def pump(src: anyio.abc.SocketStream, dst: anyio.abc.SocketStream) -> None:
                    try:
                        async for chunk in src:
                            await dst.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        pass
                    tg.cancel_scope.cancel()  # one side ended: close both

                tg.start_soon(pump, client, upstream)
                tg.start_soon(pump, upstream, client)


def _writers(update: bytes) -> set[int]:
    """The Y.js client ids that created items in ``update`` (its state vector's keys)."""
    return {client for client, _clock in _pairs(get_state(update))}


def _pairs(state: bytes) -> list[tuple[int, int]]:
    decoder = Decoder(state)
    count = decoder.read_var_uint()
    return [(decoder.read_var_uint(), decoder.read_var_uint()) for _ in range(count)]


class WriteWatcher(HumanClient):
    """A person in one document who records every other client's writes.

    :attr:`writes` holds ``(time.monotonic(), client_id)`` for each client whose new
    items arrive in an update (an agent marking a place, or another person typing);
    the watcher's own edits are not recorded.
    """

    def __init__(self, url: str, name: str = "Watcher") -> None:
        super().__init__(url, name=name)
        self.writes: list[tuple[float, int]] = []
        self.doc.observe(self._record)

    def _record(self, event: TransactionEvent) -> None:
        now = time.monotonic()
        for client in _writers(event.update):
            if client != self.doc.client_id:
                self.writes.append((now, client))

    def writers_since(self, since: float) -> set[int]:
        return {client for at, client in self.writes if at >= since}


@asynccontextmanager
async def watching(urls: dict[str, str]) -> AsyncIterator[dict[str, WriteWatcher]]:
    """One connected :class:`WriteWatcher` per document (``{document_id: ws url}``)."""
    watchers = {doc: WriteWatcher(url) for doc, url in urls.items()}
    async with AsyncExitStack() as stack:
        for watcher in watchers.values():
            await stack.enter_async_context(watcher.connected())
        yield watchers
