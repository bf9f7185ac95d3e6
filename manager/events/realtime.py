"""The activity source for Supabase: Realtime wakes the reader, PostgREST is the truth.

:class:`RealtimeActivitySource` has the surface of
:class:`~manager.events.listen.ActivityListener` (``run(on_events, *, task_status)``,
``cursor``, ``lag_s``, ``connected``). It subscribes with ``realtime``'s
:class:`AsyncRealtimeClient` to ``postgres_changes`` INSERT on
``public.document_activity``, but a change is only a wake-up hint, like a
NOTIFY: events are always read through the store by id cursor, after every
change, after every (re)subscribe (again ``settle_s`` later) and every
``poll_interval_s``. That read is what guarantees delivery (invariant 3), because
Realtime does not: realtime-py's own auto-reconnect drops ``postgres_changes``
bindings, ``SUBSCRIBED`` is reported before changes actually stream, and missed
changes are never replayed. So the client runs with ``auto_reconnect=False``;
on any loss (socket closed, channel error, join refused or timed out) the whole
client is disposed of and a new one subscribes, with backoff. While Realtime
is down the timer keeps events flowing (``connected`` is False).

Ordering and holes (an id taken by an INSERT that has not committed yet) are
handled by the same :class:`~manager.events.cursor.CursorReader` as the Postgres
listener. A refused key (HTTP 401/403 on the websocket upgrade, or a join
refused before the first subscription) raises
:class:`~manager.errors.ConfigurationError` from :meth:`run` before it reports
started; the key never appears in logs or errors.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import structlog
import websockets.exceptions
from pydantic import SecretStr
from realtime import AsyncRealtimeClient, NotConnectedError, RealtimeSubscribeStates

from manager.errors import ConfigurationError, DocagentsError, StoreError, redact
from manager.events.cursor import CursorReader, CursorSource, OnEvents
from manager.store.base import Store

__all__ = ["RealtimeActivitySource"]

log = structlog.get_logger(__name__)

CHANNEL_NAME = "docagents-activity"
_AUTH_STATUS = frozenset({401, 403})


#: Loggers of the libraries that may print the websocket URL, whose query holds the key
#: (websockets logs the request line at DEBUG).
_LIBRARY_LOGGERS = (
    "websockets.client",
    "realtime._async.client",
    "realtime._async.channel",
    "realtime._async.push",
)


class _RedactSecret(logging.Filter):
    """Replaces the key in records of the libraries' loggers (they are not ours)."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._secret and self._secret in message:
            record.msg = message.replace(self._secret, "<redacted>")
            record.args = None
        return True


class _SubscriptionFailed(DocagentsError):
    """The join was refused, timed out, or the channel errored before SUBSCRIBED.

    It never leaves this module: the subscription loop logs it and subscribes again.
    """


class RealtimeActivitySource(CursorSource):
    """Delivers ``document_activity`` events in id order, none lost, woken by Realtime.

    Stopping is cancelling the scope :meth:`run` runs in.
    """

    def __init__(
        self,
        url: str,
        service_key: SecretStr,
        store: Store,
        *,
        cursor: int,
        poll_interval_s: float = 5.0,
        batch: int = 1000,
        gap_timeout_s: float = 10.0,
        settle_s: float = 2.0,
        join_timeout_s: int = 10,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 1.0,
    ) -> None:
        super().__init__(
            CursorReader(store, cursor=cursor, batch=batch, gap_timeout_s=gap_timeout_s)
        )
        self._realtime_url = url.rstrip("/") + "/realtime/v1"
        self._key = service_key
        self._poll_interval_s = poll_interval_s
        self._settle_s = settle_s
        self._join_timeout_s = join_timeout_s
        self._backoff_min_s = backoff_min_s
        self._backoff_max_s = backoff_max_s
        self._wake = anyio.Event()

    @property
    def connected(self) -> bool:
        """True while the Realtime channel is subscribed (events still flow by timer if not)."""
        return self._connected

    async def run(
        self,
        on_events: OnEvents,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Subscribe, read and deliver until cancelled.

        ``task_status.started()`` once the first subscription attempt is over
        (subscribed, or failed for a reason other than the key: then events
        flow by timer while it retries) and the first catch-up was delivered.
        """
        if self._running:
            raise RuntimeError("RealtimeActivitySource.run() called twice")
        self._running = True
        redaction = _RedactSecret(self._key.get_secret_value())
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).addFilter(redaction)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._subscribe_forever)
                await self._reader.catch_up(on_events)
                task_status.started()
                await self._follow(on_events)
        except BaseExceptionGroup as group:
            # a refused key is one clear error for the caller, not a group
            fatal, rest = group.split(ConfigurationError)
            if fatal is None or rest is not None:
                raise
            first: BaseException = fatal
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        finally:
            for name in _LIBRARY_LOGGERS:
                logging.getLogger(name).removeFilter(redaction)

    # -- the subscription: only a wake-up -------------------------------------------

    async def _subscribe_forever(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        failures = 0

        def on_subscribed() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        while True:
            try:
                await self._subscribe_once(first=not started, on_subscribed=on_subscribed)
            except ConfigurationError:
                if not started:
                    raise
                log.exception("realtime_key_refused")
            except _SubscriptionFailed as exc:
                log.warning("realtime_subscription_failed", error=self._redact(exc))
            except (
                OSError,
                TimeoutError,
                websockets.exceptions.WebSocketException,
                NotConnectedError,  # the socket went away while the join was sent
            ) as exc:
                log.warning(
                    "realtime_connect_failed", error=self._redact(exc), attempt=failures + 1
                )
            else:
                failures = 0
            if not started:
                started = True
                log.warning("realtime_unavailable_polling", poll_interval_s=self._poll_interval_s)
                task_status.started()
            self.reconnects += 1
            delay = min(self._backoff_max_s, self._backoff_min_s * 2**failures)
            failures += 1
            await anyio.sleep(delay * random.uniform(0.8, 1.0))

    async def _subscribe_once(self, *, first: bool, on_subscribed: Callable[[], None]) -> None:
        """One client, one channel: returns (or raises) when the subscription is lost."""
        client = AsyncRealtimeClient(
            self._realtime_url,
            token=self._key.get_secret_value(),
            auto_reconnect=False,
            timeout=self._join_timeout_s,
        )
        subscribed = anyio.Event()
        lost = anyio.Event()
        errors: list[str] = []

        def on_state(status: RealtimeSubscribeStates, error: Exception | None) -> None:
            if status == RealtimeSubscribeStates.SUBSCRIBED:
                subscribed.set()
            else:
                errors.append(f"{status.value}: {error}" if error else status.value)
                lost.set()

        def on_change(_payload: Any) -> None:
            self._wake.set()

        channel = client.channel(CHANNEL_NAME)
        channel.on_postgres_changes(
            "INSERT",  # type: ignore[arg-type]  (a str enum)
            on_change,
            table="document_activity",
            schema="public",
        )
        try:
            try:
                with anyio.fail_after(self._join_timeout_s + 5):
                    await channel.subscribe(on_state)
            except websockets.exceptions.InvalidStatus as exc:
                status = exc.response.status_code
                if status in _AUTH_STATUS:
                    raise ConfigurationError(
                        f"Supabase Realtime at {self._realtime_url} refused SUPABASE_SERVICE_KEY "
                        f"(HTTP {status}); use the project's service_role key"
                    ) from exc
                raise
            if not subscribed.is_set():
                reason = "; ".join(errors) or "no reply to the join"
                if first and "jwt" in reason.lower():
                    raise ConfigurationError(
                        f"Supabase Realtime refused the channel join ({self._redact(reason)}); "
                        "check SUPABASE_SERVICE_KEY"
                    )
                raise _SubscriptionFailed(reason)
            self._connected = True
            log.info("realtime_subscribed", url=self._realtime_url, cursor=self.cursor)
            on_subscribed()
            self._wake.set()  # catch up: anything committed while (re)subscribing
            await self._watch(client, lost)
            raise _SubscriptionFailed("; ".join(errors) or "connection lost")
        finally:
            self._connected = False
            with anyio.CancelScope(shield=True):
                await _dispose(client)

    async def _watch(self, client: AsyncRealtimeClient, lost: anyio.Event) -> None:
        """Wait until the subscription is lost; wake the reader again once settled."""
        settled = False
        started_at = anyio.current_time()
        while not lost.is_set() and client.is_connected and _listening(client):
            with anyio.move_on_after(1.0):
                await lost.wait()
            if not settled and anyio.current_time() - started_at >= self._settle_s:
                settled = True  # SUBSCRIBED comes before changes stream: read once more
                self._wake.set()

    # -- the reader: the id cursor is the truth -------------------------------------

    async def _follow(self, on_events: OnEvents) -> None:
        while True:
            wait_s = (
                self._poll_interval_s
                if not self._reader.has_holes
                else min(self._poll_interval_s, 1.0)
            )
            with anyio.move_on_after(wait_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self._reader.catch_up(on_events)
            except StoreError as exc:
                log.warning("activity_read_failed", error=self._redact(exc), cursor=self.cursor)

    def _redact(self, exc: BaseException | str) -> str:
        text = str(exc).strip() or type(exc).__name__
        return redact(text.splitlines()[0][:300], self._key)


def _listening(client: AsyncRealtimeClient) -> bool:
    """False once the client's reader task has ended.

    realtime-py reads the socket in a task of its own; when that task dies
    (e.g. on an exception inside the library) ``is_connected`` stays True and
    no callback fires, so the task itself is watched (a private attribute,
    read defensively).
    """
    task = getattr(client, "_listen_task", None)
    return task is not None and not task.done()


async def _dispose(client: AsyncRealtimeClient) -> None:
    """Close the client and stop the timers its channels left behind."""
    for channel in client.get_channels():
        channel.rejoin_timer.reset()
        channel.join_push.destroy()
    await client.close()
