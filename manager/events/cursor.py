"""The backend-neutral id cursor over ``document_activity``, shared by every activity source.

A source (the Postgres LISTEN in :mod:`manager.events.listen`, Supabase Realtime in
:mod:`manager.events.realtime`) only decides *when* to read; :class:`CursorReader`
reads the table through the :class:`~manager.store.base.Store` by id cursor and
delivers, so a missed wake-up or a dropped link loses nothing (invariant 3).

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
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import structlog

from manager.store.base import ActivityEvent, Store

__all__ = ["CursorReader", "CursorSource", "EventCursor", "OnEvents"]

log = structlog.get_logger(__name__)

#: What a source hands each batch of events to; the cursor moves once it returns.
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
