"""Fuzzing the parsers that see untrusted bytes first: y-websocket messages, document paths.

No exception other than the documented one escapes; every malformed input maps to
its close code (1007 for messages, 4400/4404 for paths).
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, create_awareness_message, create_update_message

from docserver.connection import MALFORMED_CLOSE_CODE
from docserver.errors import MalformedMessage
from docserver.messages import AWARENESS, SYNC, inspect_message
from docserver.paths import (
    INVALID_DOCUMENT_CLOSE_CODE,
    MAX_DOCUMENT_ID_LENGTH,
    UNKNOWN_PATH_CLOSE_CODE,
    Refusal,
    document_id_problem,
    parse_document_path,
)
from docserver.updates import Novelty, decode_delete_set, novelty


def _var_uint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _close_code_for(message: bytes) -> int | None:
    """What the connection does with a message: None (passed on) or a close code."""
    try:
        inspect_message(message)
    except MalformedMessage:
        return MALFORMED_CLOSE_CODE
    return None


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_inspected_or_refused_with_1007(message: bytes) -> None:
    assert _close_code_for(message) in (None, MALFORMED_CLOSE_CODE)


json_states = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**53),
            st.integers(0, 2**32),
            json_states | st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
        ),
        max_size=5,
    ),
    st.binary(max_size=4),
)
def test_awareness_messages_well_formed_or_refused(
    entries: list[tuple[int, int, object]], trailer: bytes
) -> None:
    update = _var_uint(len(entries))
    for client_id, clock, state in entries:
        raw = json.dumps(state).encode() if not isinstance(state, str) else state.encode()
        update += _var_uint(client_id) + _var_uint(clock) + _var_uint(len(raw)) + raw
    message = create_awareness_message(update + trailer)
    try:
        inspection = inspect_message(message)
    except MalformedMessage:
        return
    assert inspection.message_type == AWARENESS
    assert [e.client_id for e in inspection.awareness] == [e[0] for e in entries]


def test_deeply_nested_awareness_state_is_refused_not_crashing() -> None:
    raw = b"[" * 100_000
    update = _var_uint(1) + _var_uint(1) + _var_uint(0) + _var_uint(len(raw)) + raw
    assert _close_code_for(create_awareness_message(update)) == MALFORMED_CLOSE_CODE


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_sync_updates_with_any_payload_frame_correctly(payload: bytes) -> None:
    inspection = inspect_message(create_update_message(payload))
    assert inspection.message_type == SYNC
    assert inspection.update == payload
    # the room's check of the content never raises anything but the documented errors
    try:
        result = novelty(payload, Doc())
    except (ValueError, MalformedMessage):
        return
    assert isinstance(result, Novelty)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_delete_set_decoder(encoded: bytes) -> None:
    try:
        decoded = decode_delete_set(encoded)
    except MalformedMessage:
        return
    assert all(isinstance(client, int) for client in decoded)


path_bytes = st.binary(max_size=200) | st.lists(
    st.sampled_from([b"/", b"parties", b"document", b"%2F", b"%", b"..", b"a", b"\xff", b"%00"]),
    max_size=12,
).map(b"".join)


@settings(max_examples=800, deadline=None)
@given(path_bytes)
def test_any_path_names_a_valid_document_or_gets_its_close_code(raw_path: bytes) -> None:
    result = parse_document_path(raw_path, party_name="document")
    if isinstance(result, Refusal):
        assert result.code in (INVALID_DOCUMENT_CLOSE_CODE, UNKNOWN_PATH_CLOSE_CODE)
        assert result.reason
    else:
        assert document_id_problem(result) is None
        assert 0 < len(result) <= MAX_DOCUMENT_ID_LENGTH


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_any_document_id_is_accepted_or_refused_with_4400(document_id: str) -> None:
    from urllib.parse import quote

    result = parse_document_path(
        b"/parties/document/" + quote(document_id, safe="").encode(), party_name="document"
    )
    if document_id_problem(document_id) is None:
        assert result == document_id
    else:
        assert isinstance(result, Refusal)
        assert result.code == INVALID_DOCUMENT_CLOSE_CODE
