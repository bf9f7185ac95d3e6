"""Bounds at the socket, before uvicorn parses anything: request head, handshake time, addresses.

uvicorn (with the ``websockets-sansio`` implementation) never answers a
websocket handshake whose request line or a header line exceeds 8192 bytes (the
``websockets`` parser refuses it and the socket is left hanging), and it keeps
a socket that never sends a complete request open forever. The protocols built
by :func:`guarded_protocols` put two small pure checks in front:

- :class:`RequestHeadGuard` reads the bytes of the first request head as they
  arrive: a request line longer than ``max_line`` gets ``414``, a header line
  longer than that or a head over ``max_head`` gets ``431``, both at once;
- a timer closes a connection whose head is not complete within
  ``handshake_timeout_s``;
- :class:`AddressCounter` refuses (``429``) a connection beyond
  ``max_per_address`` open ones from the same client address (0: no limit).
  Addresses in ``exempt`` networks are not counted: by default loopback, where
  the manager's agents (one socket per live document) and a local reverse proxy
  (every client one address) come from.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = [
    "AddressCounter",
    "HeadRefusal",
    "RequestHeadGuard",
    "guarded_protocols",
    "parse_networks",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HeadRefusal:
    status: int
    reason: str


class RequestHeadGuard:
    """Watches the first request head of a connection (pure, fed with raw bytes)."""

    def __init__(self, *, max_line: int, max_head: int) -> None:
        self._max_line = max_line
        self._max_head = max_head
        self._line = 0
        self._head = 0
        self._first_line = True
        self._previous_empty = False  # the last line ended and was empty
        self.complete = False

    def feed(self, data: bytes) -> HeadRefusal | None:
        """Account for ``data``; a refusal as soon as a limit is passed."""
        if self.complete:
            return None
        for byte in data:
            self._head += 1
            if byte == 0x0A:  # end of a line (CR is counted in it)
                if self._line <= 1 and not self._first_line:  # "\r\n" alone: end of head
                    self.complete = True
                    return None
                self._first_line = False
                self._line = 0
                continue
            self._line += 1
            if self._line > self._max_line:
                if self._first_line:
                    return HeadRefusal(414, "request line too long")
                return HeadRefusal(431, "request header line too long")
            if self._head > self._max_head:
                return HeadRefusal(431, "request head too large")
        return None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(spec: str) -> tuple[Network, ...]:
    """``"127.0.0.0/8, ::1"`` -> networks; ValueError names a bad entry."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()
    )


class AddressCounter:
    """Open connections per client address (pure)."""

    def __init__(self, max_per_address: int, *, exempt: Iterable[Network] = ()) -> None:
        self._max = max_per_address
        self._exempt = tuple(exempt)
        self._open: dict[str, int] = {}
        self._holders: dict[int, str] = {}

    def _is_exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._exempt)

    def opened(self, key: int, address: str | None) -> bool:
        """Count connection ``key`` from ``address``; False if it is one too many."""
        if address is None or self._max <= 0 or self._is_exempt(address):
            return True
        if self._open.get(address, 0) >= self._max:
            return False
        self._open[address] = self._open.get(address, 0) + 1
        self._holders[key] = address
        return True

    def closed(self, key: int) -> None:
        """Forget connection ``key`` (idempotent)."""
        address = self._holders.pop(key, None)
        if address is None:
            return
        left = self._open[address] - 1
        if left:
            self._open[address] = left
        else:
            del self._open[address]

    def count(self, address: str) -> int:
        return self._open.get(address, 0)


def _address(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None


def guarded_protocols(
    *,
    max_line: int,
    max_head: int,
    handshake_timeout_s: float,
    max_per_address: int,
    exempt: Iterable[Network] = (),
) -> tuple[type[H11Protocol], type[WebSocketsSansIOProtocol]]:
    """uvicorn ``http`` and ``ws`` protocol classes with the checks above."""
    counter = AddressCounter(max_per_address, exempt=exempt)

    class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
        def connection_lost(self, exc: Exception | None) -> None:
            counter.closed(id(self.transport))
            super().connection_lost(exc)

    class GuardedHttpProtocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._guard = RequestHeadGuard(max_line=max_line, max_head=max_head)
            self._handshake_timer: asyncio.TimerHandle | None = None
            self._refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = _address(transport)
            if not counter.opened(id(transport), address):
                log.warning("connection_refused", client=address, reason="too many connections")
                self._refuse(HeadRefusal(429, "too many connections from this address"))
                return
            self._handshake_timer = self.loop.call_later(handshake_timeout_s, self._too_slow)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timer()
            counter.closed(id(self.transport))
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if not self._guard.complete:
                refusal = self._guard.feed(data)
                if refusal is not None:
                    log.warning(
                        "request_refused",
                        client=_address(self.transport),
                        status=refusal.status,
                        reason=refusal.reason,
                    )
                    self._refuse(refusal)
                    return
                if self._guard.complete:
                    self._cancel_timer()
            super().data_received(data)

        def _too_slow(self) -> None:
            self._handshake_timer = None
            if not self._guard.complete and not self.transport.is_closing():
                log.warning("handshake_timeout", client=_address(self.transport))
                self._refuse(HeadRefusal(408, "request head not received in time"))

        def _cancel_timer(self) -> None:
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
                self._handshake_timer = None

        def _refuse(self, refusal: HeadRefusal) -> None:
            self._refused = True
            self._cancel_timer()
            body = refusal.reason.encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s"
                % (refusal.status, refusal.reason.encode(), len(body), body)
            )
            self.transport.close()

    return GuardedHttpProtocol, GuardedWebSocketProtocol
