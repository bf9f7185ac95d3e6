"""The Postgres activity source: follow ``document_activity`` by id cursor, woken by NOTIFY.

A notification is only a wake-up hint. :class:`ActivityListener` keeps one
dedicated autocommit connection with ``LISTEN document_activity`` (as
procrastinate's ``_loop_notify`` does), and reads the table through the store
(:class:`~manager.events.cursor.CursorReader`) after every wake-up, after every
(re)connect and every ``poll_interval_s``, so a missed notification or a dropped
connection loses nothing (invariant 3). psycopg errors of the LISTEN connection
are caught here: logged, then the connection is made again with backoff.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable

import anyio
import anyio.abc
import psycopg
import structlog

from manager.errors import StoreError
from manager.events.cursor import CursorReader, CursorSource, OnEvents
from manager.store.base import Store

__all__ = ["CHANNEL", "FLEET_CHANNEL", "ActivityListener"]

log = structlog.get_logger(__name__)

#: The NOTIFY channel the ``document_activity`` trigger signals (migrations/0001).
CHANNEL = "document_activity"
#: ``drain_manager()`` (migrations/0012) notifies here: a wake-up for the fleet's
#: lease keeper (a drain has begun), never data.
FLEET_CHANNEL = "manager_leases"


class ActivityListener(CursorSource):
    """Delivers ``document_activity`` events in id order, none lost.

    Stopping is cancelling the scope :meth:`run` runs in. The same connection
    listens on :data:`FLEET_CHANNEL` too; such a notification calls
    :attr:`on_fleet_notice` (the daemon wakes its lease keeper with it).
    """

    def __init__(
        self,
        conninfo: str,
        store: Store,
        *,
        cursor: int,
        poll_interval_s: float = 5.0,
        batch: int = 1000,
        gap_timeout_s: float = 10.0,
        probe_timeout_s: float = 5.0,
        connect_timeout_s: float = 10.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 1.0,
    ) -> None:
        super().__init__(
            CursorReader(store, cursor=cursor, batch=batch, gap_timeout_s=gap_timeout_s)
        )
        self._conninfo = conninfo
        self._poll_interval_s = poll_interval_s
        self._probe_timeout_s = probe_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._backoff_min_s = backoff_min_s
        self._backoff_max_s = backoff_max_s
        #: called (in the listener's task) on every notification on FLEET_CHANNEL
        self.on_fleet_notice: Callable[[], None] | None = None

    async def run(
        self,
        on_events: OnEvents,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen, read and deliver until cancelled.

        ``task_status.started()`` once LISTEN is active and the first catch-up
        read has been delivered.
        """
        if self._running:
            raise RuntimeError("ActivityListener.run() called twice")
        self._running = True
        started = False
        failures = 0
        while True:
            try:
                conn = await self._connect()
            except (psycopg.Error, TimeoutError) as exc:
                log.warning("activity_connect_failed", error=_brief(exc), attempt=failures + 1)
            else:
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await conn.execute(f"LISTEN {FLEET_CHANNEL}")
                    self._connected = True
                    if failures or self.reconnects:
                        log.info("activity_listener_reconnected", cursor=self.cursor)
                    await self._reader.catch_up(on_events)
                    failures = 0
                    if not started:
                        started = True
                        task_status.started()
                    await self._follow(conn, on_events)
                except (psycopg.Error, StoreError, TimeoutError) as exc:
                    log.warning("activity_connection_lost", error=_brief(exc), cursor=self.cursor)
                finally:
                    self._connected = False
                    with anyio.CancelScope(shield=True):
                        await conn.close()
                self.reconnects += 1
            delay = min(self._backoff_max_s, self._backoff_min_s * 2**failures)
            failures += 1
            await anyio.sleep(delay * random.uniform(0.8, 1.0))

    async def _connect(self) -> psycopg.AsyncConnection:
        with anyio.fail_after(self._connect_timeout_s):
            return await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=max(2, int(self._connect_timeout_s)),
                application_name="docagents-activity",
            )

    async def _follow(self, conn: psycopg.AsyncConnection, on_events: OnEvents) -> None:
        while True:
            woke = await self._wait(conn, wait_s=self._poll_interval_s)
            if not woke:
                with anyio.fail_after(self._probe_timeout_s):
                    await conn.execute("SELECT 1")
            await self._reader.catch_up(on_events)

    async def _wait(self, conn: psycopg.AsyncConnection, *, wait_s: float) -> bool:
        """Wait for a notification (True) or the timeout (False); drain the backlog.

        A notification on :data:`FLEET_CHANNEL` is passed on to
        :attr:`on_fleet_notice` (once per backlog)."""
        channels: set[str] = set()
        async with contextlib.aclosing(conn.notifies(timeout=wait_s, stop_after=1)) as notes:
            async for note in notes:
                channels.add(note.channel)
        if channels:
            async with contextlib.aclosing(conn.notifies(timeout=0)) as notes:
                async for note in notes:
                    channels.add(note.channel)
        if FLEET_CHANNEL in channels and self.on_fleet_notice is not None:
            self.on_fleet_notice()
        return bool(channels)


def _brief(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
