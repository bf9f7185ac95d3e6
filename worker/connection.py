"""Keeping one ``Doc`` synced with a y-websocket server, across disconnects.

``pycrdt.Provider`` never reconnects: when the socket drops its receive loop just
ends. :class:`DocumentConnection` watches the socket and starts a new provider on
the same ``Doc`` after an exponential backoff with jitter (1 s to 30 s); the sync
handshake of the new connection pushes whatever was written offline, in both
directions. A broken Y.js message from the server is logged, the socket closed and
the connection re-established, so the worker survives it.

A server that refuses the agent's credential (close codes 4401, 4403: an
expired or foreign credential for one agent life) is not retried:
:class:`AccessRefused` ends :meth:`DocumentConnection.run`, the worker exits, and
its manager starts a new life with a new credential. A credential "in use"
(4409) is most often this worker's own previous socket, which the server has not
closed yet (the client gave up on a slow handshake); it is retried with the
usual backoff for :data:`IN_USE_RETRY_S` (longer than the docserver's ping
interval plus timeout, after which it closes a dead socket) before it counts as
refused. A server that
fences this agent (4412: a newer agent life holds the document) raises
:class:`~worker.errors.Fenced`: the agent reports it and the worker exits without
reconnecting.

This is where websockets' and the OS's exceptions enter the worker: a failed
connect or session becomes :class:`~worker.errors.ConnectionLost` (retried here), a
message pycrdt cannot decode :class:`~worker.errors.SyncRejected` (see
:mod:`worker.errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import structlog
from anyio.abc import TaskStatus
from pycrdt import Doc, Provider
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from worker.awareness import AgentAwareness
from worker.backoff import Backoff
from worker.channel import WebsocketChannel
from worker.errors import AccessRefused, ConnectionLost, CredentialInUse, Fenced, SyncRejected

__all__ = ["DocumentConnection"]

log = structlog.get_logger(__name__)

#: Largest websocket message accepted (a first sync carries the whole document).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Close codes of a refused credential (docserver: not authenticated, not allowed, in use).
REFUSED_CLOSE_CODES = frozenset({4401, 4403})
#: Close code of a credential whose connection the server still holds.
IN_USE_CLOSE_CODE = 4409
#: How long a credential "in use" is retried before it counts as refused.
IN_USE_RETRY_S = 60.0
#: Close code of an agent fenced by a newer life of its document (docserver.fencing).
FENCED_CLOSE_CODE = 4412


class DocumentConnection:
    def __init__(
        self,
        doc: Doc,
        awareness: AgentAwareness,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        on_synced: Callable[[], None] | None = None,
        backoff: Backoff | None = None,
        keepalive_s: float = 10.0,
    ) -> None:
        self._doc = doc
        self._awareness = awareness
        self._url = url
        self._headers = headers or {}
        self._on_synced = on_synced
        self._backoff = backoff or Backoff()
        self._keepalive_s = keepalive_s
        self._websocket: ClientConnection | None = None
        self._channel: WebsocketChannel | None = None
        self._running = False
        self._awareness_dirty = anyio.Event()
        #: ``anyio.current_time()`` of the current session's sync, None when offline.
        self.synced_at: float | None = None
        self.sessions = 0
        awareness.on_local_update(lambda: self._awareness_dirty.set())

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Stay connected until cancelled."""
        if self._running:
            raise RuntimeError("DocumentConnection already running")
        self._running = True
        task_status.started()
        in_use_since: float | None = None
        try:
            while True:
                try:
                    await self._session()
                    log.info("websocket_closed", url=self._url)
                    in_use_since = None
                except CredentialInUse:
                    now = anyio.current_time()
                    in_use_since = now if in_use_since is None else in_use_since
                    if now - in_use_since >= IN_USE_RETRY_S:
                        raise
                    log.warning("agent_credential_in_use", url=self._url, retrying=True)
                except SyncRejected as exc:
                    log.warning(
                        "yjs_message_rejected", url=self._url, error=_describe(exc.__cause__)
                    )
                except ConnectionLost as exc:
                    log.warning("websocket_failed", url=self._url, error=_describe(exc.__cause__))
                delay = self._backoff.next_delay()
                log.info("reconnecting", url=self._url, delay_s=round(delay, 2))
                await anyio.sleep(delay)
        finally:
            self._running = False

    async def latency_ms(self, timeout_s: float = 5.0) -> float | None:
        """One websocket ping/pong round trip, or None when offline or too slow."""
        websocket = self._websocket
        if websocket is None:
            return None
        with anyio.move_on_after(timeout_s):
            try:
                pong = await websocket.ping()
                return await pong * 1000.0
            except ConnectionClosed:
                return None
        return None

    async def leave(self) -> None:
        """Publish the null awareness state and close the socket."""
        self._awareness.leave()
        channel, websocket = self._channel, self._websocket
        if channel is not None:
            await channel.send_awareness(self._awareness.local_update())
        if websocket is not None:
            await websocket.close()

    async def _session(self) -> None:
        try:
            websocket = await connect(
                self._url,
                additional_headers=self._headers,
                max_size=MAX_MESSAGE_BYTES,
                open_timeout=10,
                ping_interval=self._keepalive_s,
                ping_timeout=self._keepalive_s,
                close_timeout=2,
                proxy=None,
                # Y.js updates are compact binary; deflate would cost a zlib context
                # per connection here and in the server, and CPU on every message.
                compression=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectionLost(f"cannot connect to {self._url}") from exc
        channel = WebsocketChannel(websocket, self._url, self._awareness)
        self._websocket, self._channel = websocket, channel
        self.sessions += 1
        log.info("websocket_connected", url=self._url, session=self.sessions)
        try:
            await self._sync(websocket, channel)
        finally:
            self._websocket = self._channel = None
            self.synced_at = None
            self._awareness.forget_remote()
            with anyio.CancelScope(shield=True):
                await websocket.close()
            if websocket.close_code == FENCED_CLOSE_CODE:
                reason = websocket.close_reason or "fenced"
                log.warning("agent_fenced", url=self._url, reason=reason)
                raise Fenced(reason)
            if websocket.close_code == IN_USE_CLOSE_CODE:
                raise CredentialInUse(websocket.close_reason or "agent credential in use")
            if websocket.close_code in REFUSED_CLOSE_CODES:  # whatever ended the session
                reason = websocket.close_reason or f"close code {websocket.close_code}"
                log.error("agent_access_refused", url=self._url, reason=reason)
                raise AccessRefused(reason)

    async def _sync(self, websocket: ClientConnection, channel: WebsocketChannel) -> None:
        provider = Provider(self._doc, channel, log=logging.getLogger("pycrdt.provider"))
        try:
            async with provider, anyio.create_task_group() as tg:
                tg.start_soon(self._send_awareness, channel)
                tg.start_soon(self._wait_synced, provider)
                await websocket.wait_closed()
                tg.cancel_scope.cancel()
        except ConnectionClosed as exc:
            raise ConnectionLost("connection closed") from exc
        except Exception as exc:
            # pycrdt raises assorted errors (ValueError, RuntimeError, IndexError,
            # its own decoding errors) from inside the provider's task group.
            raise SyncRejected("sync failed") from exc

    async def _wait_synced(self, provider: Provider) -> None:
        await provider.synced.wait()
        self.synced_at = anyio.current_time()
        self._backoff.reset()
        log.info("document_synced", url=self._url, session=self.sessions)
        if self._on_synced is not None:
            self._on_synced()

    async def _send_awareness(self, channel: WebsocketChannel) -> None:
        await channel.send_awareness(self._awareness.local_update())
        while True:
            await self._awareness_dirty.wait()
            self._awareness_dirty = anyio.Event()
            await channel.send_awareness(self._awareness.local_update())


def _describe(exc: BaseException | None) -> str:
    """The leaf errors of a (possibly grouped) exception, for one log field."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return repr(exc)
