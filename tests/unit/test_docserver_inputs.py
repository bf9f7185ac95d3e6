"""Pure checks on what clients send: document paths, message framing, rate limit."""

from __future__ import annotations

import pytest
from pycrdt import (
    Awareness,
    Doc,
    Text,
    create_awareness_message,
    create_sync_message,
    create_update_message,
)

from docserver.errors import MalformedMessage
from docserver.messages import AWARENESS, SYNC, inspect_message
from docserver.paths import Refusal, parse_document_path
from docserver.ratelimit import TokenBucket


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/parties/document/notes", "notes"),
        (b"/notes", "notes"),
        (
            b"/parties/document/travel%20notes%2F%3F",
            Refusal(4400, "invalid document id: contains '/'"),
        ),
        (b"/parties/document/caf%C3%A9%20%3F", "café ?"),
        (b"/" + b"x" * 512, "x" * 512),
    ],
)
def test_accepted_and_refused_paths(raw: bytes, expected: object) -> None:
    assert parse_document_path(raw, party_name="document") == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"/parties/document/", "empty"),
        (b"/parties/document", "empty"),
        (b"/", "empty"),
        (b"/" + b"x" * 513, "longer than 512"),
        (b"/" + "é".encode() * 513, "longer than 512"),
        (b"/a%2Fb", "'/'"),
        (b"/parties/document/a/b", "'/'"),
        (b"/..", "'..'"),
        (b"/parties/document/a..b", "'..'"),
        (b"/a%00b", "control"),
        (b"/a%0Ab", "control"),
        (b"/a%7Fb", "control"),
        (b"/%ff%fe", "UTF-8"),
    ],
)
def test_refused_document_ids(raw: bytes, reason: str) -> None:
    refusal = parse_document_path(raw, party_name="document")
    assert isinstance(refusal, Refusal), refusal
    assert refusal.code == 4400
    assert refusal.reason.startswith("invalid document id: ")
    assert reason in refusal.reason


def test_unknown_party_is_refused() -> None:
    refusal = parse_document_path(b"/parties/other/doc", party_name="document")
    assert refusal == Refusal(4404, "unknown party")


def test_real_messages_pass_inspection() -> None:
    doc = Doc()
    doc["t"] = text = Text()
    text += "hello"
    assert inspect_message(create_sync_message(doc)).message_type == SYNC
    assert inspect_message(create_update_message(doc.get_update())).message_type == SYNC
    awareness = Awareness(doc)
    awareness.set_local_state({"user": {"name": "Ann"}})
    message = create_awareness_message(awareness.encode_awareness_update([doc.client_id]))
    inspection = inspect_message(message)
    assert inspection.message_type == AWARENESS
    assert [(e.client_id, e.present) for e in inspection.awareness] == [(doc.client_id, True)]
    awareness.set_local_state(None)
    gone = create_awareness_message(awareness.encode_awareness_update([doc.client_id]))
    assert [e.present for e in inspect_message(gone).awareness] == [False]


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\x00",  # sync without step
        b"\x00\x07\x00",  # unknown sync step
        b"\x00\x02\x05ab",  # truncated update
        b"\x00\x02\x01ab",  # trailing bytes
        b"\x01\x03\x01\x01",  # truncated awareness update
        b"\x01\x06\x01\x01\x01\x02{x",  # state is not JSON
        b"\x01\x06\x01\x01\x01\x02[]",  # state is not an object
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # endless varint
    ],
)
def test_malformed_messages(message: bytes) -> None:
    with pytest.raises(MalformedMessage):
        inspect_message(message)


def test_unknown_message_types_pass_through() -> None:
    assert inspect_message(b"\x03").message_type == 3


def test_token_bucket_allows_burst_then_spaces_messages() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.0) == pytest.approx(0.2)
    # after a quiet second the bucket is full again (and no fuller)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) > 0
