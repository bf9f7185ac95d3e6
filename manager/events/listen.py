"""The activity source: follow ``document_activity`` by id cursor, woken by NOTIFY.

A notification is only a wake-up hint. :class:`ActivityListener` keeps one
dedicated autocommit connection with ``LISTEN document_activity`` (as
procrastinate's ``_loop_notify`` does), and reads the table through the store
after every wake-up, after every (re)connect and every ``poll_interval_s``,
so a missed notification or a dropped connection loses nothing (invariant 3).

Ids are taken at INSERT and become visible at COMMIT, so a lower id can appear
after a higher one was read. :class:`EventCursor` (pure, no I/O) keeps such
holes open for ``gap_timeout_s``: a row that fills one is still delivered,
unless an event of the same document with a higher id was delivered already
(then applying it would reorder that document's events: it is logged and
skipped as superseded). The cursor only moves past an id once it was
delivered, or its hole expired (a rolled-back INSERT leaves a hole forever).
"""

from __future__ import annotations

import bisect
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import anyio
import anyio.abc
import psycopg
import structlog

from manager.errors import StoreError
from manager.store.base import ActivityEvent, Store

__all__ = ["CHANNEL", "FLEET_CHANNEL", "ActivityListener", "EventCursor"]

log = structlog.get_logger(__name__)

CHANNEL = "document_activity"
#: ``drain_manager()`` (migrations/0012) notifies here: a wake-up for the fleet's
#: lease keeper (a drain has begun), never data.
FLEET_CHANNEL = "manager_leases"

OnEvents = Callable[[Sequence[ActivityEvent]], Awaitable[None]]


class EventCursor:
    """Which ids were delivered, which are holes, and where the cursor is.

    Everything at or below :attr:`cursor` is done (delivered, skipped, or a
    hole that expired). Above it, :attr:`high` is the highest id read; ids in
    between are either delivered (remembered with their document) or holes.
    """

    def __init__(self, cursor: int, *, gap_timeout_s: float = 10.0) -> None:
        self.cursor = cursor
        self.high = cursor
        self.gap_timeout_s = gap_timeout_s
        self._done: dict[int, str | None] = {}  # id -> document_id (None: unusable row)
        self._holes: list[int] = []  # sorted ids read around but not seen
        self._hole_since: dict[int, float] = {}

    @property
    def holes(self) -> list[int]:
        return list(self._holes)

    def accept(
        self, events: Sequence[ActivityEvent], ids: Sequence[int], *, now: float
    ) -> list[ActivityEvent]:
        """Take one page read by id after :attr:`cursor`; return the events to deliver.

        ``ids`` are all ids the page read, usable or not. Events read before
        but never marked :meth:`delivered` (the consumer failed) come again.
        """
        usable = {event.id: event for event in events}
        fresh: list[ActivityEvent] = []
        previous = self.cursor
        for row_id in ids:
            if row_id <= self.cursor or row_id in self._done:
                previous = max(previous, row_id)
                continue
            if row_id > self.high:
                for missing in range(max(previous, self.high) + 1, row_id):
                    self._open_hole(missing, now)
                self.high = row_id
            else:
                self._close_hole(row_id)
            previous = row_id
            event = usable.get(row_id)
            if event is None:
                self._done[row_id] = None
            elif self._superseded(event):
                log.warning(
                    "activity_event_superseded",
                    event_id=event.id,
                    document_id=event.document_id,
                    event_type=event.event_type,
                )
                self._done[row_id] = event.document_id
            else:
                fresh.append(event)
        return fresh

    def delivered(self, events: Sequence[ActivityEvent], *, now: float) -> None:
        """Record events handed to the consumer; advance the cursor."""
        for event in events:
            self._done[event.id] = event.document_id
        self.advance(now)

    def advance(self, now: float) -> None:
        """Move the cursor over delivered ids and expired holes."""
        while True:
            nxt = self.cursor + 1
            if nxt in self._done:
                del self._done[nxt]
                self.cursor = nxt
            elif self._holes and self._holes[0] == nxt:
                since = self._hole_since[nxt]
                if now - since < self.gap_timeout_s:
                    return
                log.info("activity_id_gap_skipped", event_id=nxt, waited_s=round(now - since, 1))
                self._close_hole(nxt)
                self.cursor = nxt
            else:
                return  # the end, or an event read but not delivered yet

    def _superseded(self, event: ActivityEvent) -> bool:
        return any(
            done_id > event.id and document_id == event.document_id
            for done_id, document_id in self._done.items()
        )

    def _open_hole(self, row_id: int, now: float) -> None:
        if row_id in self._hole_since:
            return
        bisect.insort(self._holes, row_id)
        self._hole_since[row_id] = now

    def _close_hole(self, row_id: int) -> None:
        if self._hole_since.pop(row_id, None) is None:
            return
        index = bisect.bisect_left(self._holes, row_id)
        if index < len(self._holes) and self._holes[index] == row_id:
            del self._holes[index]


class CursorReader:
    """Reads ``document_activity`` through a store by id cursor and delivers in batches.

    Shared by every activity source: a wake-up (NOTIFY, a Realtime change, a
    timer) only says "read now"; this is the read. The cursor advances only
    after ``on_events`` returned (see :class:`EventCursor` for holes).
    """

    def __init__(self, store: Store, *, cursor: int, batch: int, gap_timeout_s: float) -> None:
        self._store = store
        self._ids = EventCursor(cursor, gap_timeout_s=gap_timeout_s)
        self._batch = batch
        self.lag_s: float | None = None
        self.events_delivered = 0

    @property
    def cursor(self) -> int:
        return self._ids.cursor

    @property
    def has_holes(self) -> bool:
        return bool(self._ids.holes)

    async def catch_up(self, on_events: OnEvents) -> None:
        """Read by id cursor until the end of the table, delivering in batches."""
        start = self._ids.cursor
        while True:
            page = await self._store.read_events(start, self._batch)
            complete = len(page.ids) < self._batch
            fresh = self._ids.accept(page.events, page.ids, now=time.monotonic())
            if fresh:
                await on_events(fresh)
                self._ids.delivered(fresh, now=time.monotonic())
                self.events_delivered += len(fresh)
                self.lag_s = max(0.0, (datetime.now(UTC) - fresh[-1].timestamp).total_seconds())
            else:
                self._ids.advance(time.monotonic())
            if complete:
                return
            start = page.ids[-1]


class CursorSource:
    """What every activity source exposes about its :class:`CursorReader` and link."""

    def __init__(self, reader: CursorReader) -> None:
        self._reader = reader
        self._connected = False
        self._running = False
        self.reconnects = 0

    @property
    def cursor(self) -> int:
        """Every event with an id at or below this one has been delivered (or skipped)."""
        return self._reader.cursor

    @property
    def lag_s(self) -> float | None:
        """Delay between the last delivered event's timestamp and its delivery."""
        return self._reader.lag_s

    @property
    def events_delivered(self) -> int:
        return self._reader.events_delivered

    @property
    def connected(self) -> bool:
        return self._connected


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
