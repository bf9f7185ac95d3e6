"""Checks on incoming y-websocket messages before a room handles them (pure).

A message is ``[type, ...]``: ``0`` sync (``[0, step, varUint8Array]``, step 0/1/2),
``1`` awareness (``[1, varUint8Array(update)]``). Other types (auth, query
awareness) are passed through and ignored by the room. The checks here stop a
broken message before the room relays it to other clients, and decode the
awareness entries (client id, clock, state) that
:class:`~docserver.awareness.AwarenessOwners` judges. The content of a sync
update is checked by pycrdt when the room reads it (:mod:`docserver.updates`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from docserver.errors import MalformedMessage

__all__ = [
    "AWARENESS",
    "SYNC",
    "SYNC_STEP2",
    "SYNC_UPDATE",
    "AwarenessEntry",
    "Inspection",
    "Reader",
    "encode_awareness_message",
    "inspect_message",
]

SYNC = 0
AWARENESS = 1
#: Sync steps: 0 asks with a state vector; 1 (reply) and 2 (update) carry a document update.
SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    present: bool  # False: the client removed its state
    #: size of the encoded JSON state
    state_bytes: int = 0
    #: the state as sent (JSON text, or ``null``), for re-encoding a filtered message
    raw_state: bytes = b"null"
    #: the state says it is an agent's (``"type": "agent"``)
    claims_agent: bool = False


@dataclass(frozen=True, slots=True)
class Inspection:
    message_type: int
    awareness: list[AwarenessEntry] = field(default_factory=list)
    sync_step: int | None = None
    #: the document update carried by sync step 1 (reply) or 2 (update), else None
    update: bytes | None = None

    @property
    def carries_update(self) -> bool:
        return self.update is not None

    @property
    def is_update(self) -> bool:
        """A sync message carrying an edit made on the sender's side."""
        return self.message_type == SYNC and self.sync_step == SYNC_UPDATE


class Reader:
    """Y.js lib0 decoding: variable-length unsigned integers and byte arrays."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def done(self) -> bool:
        return self._pos == len(self._data)

    def var_uint(self) -> int:
        value = 0
        shift = 0
        while True:
            if self._pos >= len(self._data):
                raise MalformedMessage("truncated integer")
            byte = self._data[self._pos]
            self._pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise MalformedMessage("integer too long")

    def var_bytes(self) -> bytes:
        length = self.var_uint()
        end = self._pos + length
        if end > len(self._data):
            raise MalformedMessage("truncated byte array")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk


def inspect_message(message: bytes) -> Inspection:
    """Check the framing of one message; raise :class:`MalformedMessage` if broken."""
    if not message:
        raise MalformedMessage("empty message")
    reader = Reader(message)
    message_type = reader.var_uint()
    if message_type == SYNC:
        step = reader.var_uint()
        if step not in (0, 1, 2):
            raise MalformedMessage(f"unknown sync step {step}")
        payload = reader.var_bytes()
        if not reader.done:
            raise MalformedMessage("trailing bytes after sync message")
        return Inspection(
            SYNC, sync_step=step, update=payload if step in (SYNC_STEP2, SYNC_UPDATE) else None
        )
    if message_type == AWARENESS:
        update = reader.var_bytes()
        if not reader.done:
            raise MalformedMessage("trailing bytes after awareness message")
        return Inspection(AWARENESS, _awareness_entries(update))
    return Inspection(message_type)


def _awareness_entries(update: bytes) -> list[AwarenessEntry]:
    reader = Reader(update)
    entries = []
    for _ in range(reader.var_uint()):
        client_id = reader.var_uint()
        clock = reader.var_uint()
        raw = reader.var_bytes()
        try:
            state = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise MalformedMessage("awareness state is not JSON") from exc
        if state is not None and not isinstance(state, dict):
            raise MalformedMessage("awareness state is not an object")
        entries.append(
            AwarenessEntry(
                client_id,
                clock,
                state is not None,
                len(raw),
                raw or b"null",
                claims_agent=state is not None and state.get("type") == "agent",
            )
        )
    if not reader.done:
        raise MalformedMessage("trailing bytes after awareness update")
    return entries


def encode_awareness_message(entries: list[AwarenessEntry]) -> bytes:
    """A y-websocket awareness message carrying exactly ``entries``."""
    update = bytearray(_var_uint(len(entries)))
    for entry in entries:
        update += _var_uint(entry.client_id)
        update += _var_uint(entry.clock)
        update += _var_uint(len(entry.raw_state)) + entry.raw_state
    return _var_uint(AWARENESS) + _var_uint(len(update)) + bytes(update)


def _var_uint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
