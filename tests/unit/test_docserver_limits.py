"""Pure bounds: the request-head guard, connections per address, byte buckets, update novelty."""

from __future__ import annotations

import pytest
from pycrdt import Doc, Text

from docserver.listener import AddressCounter, HeadRefusal, RequestHeadGuard, parse_networks
from docserver.ratelimit import TokenBucket
from docserver.updates import Novelty, novelty

HEAD = b"GET /parties/document/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"


def test_a_normal_head_completes_even_byte_by_byte() -> None:
    guard = RequestHeadGuard(max_line=100, max_head=1000)
    for byte in HEAD:
        assert guard.feed(bytes([byte])) is None
    assert guard.complete


def test_a_long_request_line_is_refused_before_the_head_ends() -> None:
    guard = RequestHeadGuard(max_line=8000, max_head=64000)
    refusal = guard.feed(b"GET /" + b"a" * 10_000)
    assert refusal == HeadRefusal(414, "request line too long")


def test_a_long_header_line_and_a_large_head_are_refused() -> None:
    guard = RequestHeadGuard(max_line=100, max_head=1000)
    assert guard.feed(b"GET / HTTP/1.1\r\nCookie: " + b"c" * 200) == HeadRefusal(
        431, "request header line too long"
    )
    guard = RequestHeadGuard(max_line=100, max_head=1000)
    many = b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200
    assert guard.feed(many) == HeadRefusal(431, "request head too large")


def test_connections_per_address() -> None:
    counter = AddressCounter(2)
    assert counter.opened(1, "10.0.0.1")
    assert counter.opened(2, "10.0.0.1")
    assert not counter.opened(3, "10.0.0.1")
    assert counter.opened(4, "10.0.0.2")
    counter.closed(1)
    counter.closed(1)  # idempotent
    assert counter.count("10.0.0.1") == 1
    assert counter.opened(5, "10.0.0.1")
    assert AddressCounter(0).opened(1, "10.0.0.1")  # 0: no limit
    local = AddressCounter(1, exempt=parse_networks("127.0.0.0/8, ::1"))
    assert all(local.opened(key, "127.0.0.1") for key in range(5))
    assert all(local.opened(key, "::1") for key in range(5, 10))
    assert local.opened(10, "10.0.0.1") and not local.opened(11, "10.0.0.1")


def test_byte_bucket_slows_large_messages_down() -> None:
    bucket = TokenBucket(rate=1000, burst=2000, now=0)
    assert bucket.take(0, 1500) == 0
    assert bucket.take(0, 1500) == pytest.approx(1.0)  # 1000 bytes of debt at 1000/s
    assert bucket.take(10, 500) == 0  # refilled (to the burst) after a pause


def test_novelty_of_new_known_and_deleting_updates() -> None:
    source = Doc()
    source["t"] = text = Text()
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    text += "hello"
    text += " world"
    del text[0:2]
    room = Doc()
    assert novelty(updates[0], room) is Novelty.CONTENT
    room.apply_update(updates[0])
    assert novelty(updates[0], room) is Novelty.NOTHING  # an echo
    assert novelty(updates[1], room) is Novelty.CONTENT
    room.apply_update(updates[1])
    assert novelty(updates[2], room) is Novelty.DELETIONS
    room.apply_update(updates[2])
    assert novelty(updates[2], room) is Novelty.NOTHING
    assert novelty(b"\x00\x00", room) is Novelty.NOTHING
    with pytest.raises(ValueError, match=r"."):
        novelty(b"\xff\xff\xff", room)
