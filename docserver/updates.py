"""What a client's Y.js update would add to a document, without applying it (pure).

Clients resend what the server already has (a reconnecting client's sync reply,
pycrdt's provider echoing remote changes back). Storing those would grow the
store and count against the document's size cap for nothing, so the room asks
:func:`novelty` first. An update adds something when, after removing the
structs the document already holds (``pycrdt.get_update`` against the
document's state vector), structs remain (the update's first number, the count
of clients with structs, is not 0), or its delete set names a deletion
the document does not have. The delete set (Y.js v1 encoding: clients, each
with ``(clock, length)`` ranges) is decoded here; the structs are left to pycrdt.
"""

from __future__ import annotations

from enum import Enum

from pycrdt import Doc, get_update

from docserver.errors import MalformedMessage
from docserver.messages import Reader

__all__ = ["Novelty", "decode_delete_set", "novelty"]

DeleteSet = dict[int, list[tuple[int, int]]]


class Novelty(Enum):
    NOTHING = "nothing"  # already in the document
    DELETIONS = "deletions"  # only deletions the document lacks
    CONTENT = "content"  # new structs (text, elements, ...)


def decode_delete_set(encoded: bytes) -> DeleteSet:
    """A v1 delete set as ``{client: [(clock, length), ...]}``; MalformedMessage if broken."""
    reader = Reader(encoded)
    result: DeleteSet = {}
    for _ in range(reader.var_uint()):
        client = reader.var_uint()
        ranges = result.setdefault(client, [])
        for _ in range(reader.var_uint()):
            ranges.append((reader.var_uint(), reader.var_uint()))
    if not reader.done:
        raise MalformedMessage("trailing bytes after delete set")
    return result


def _covered(ranges: list[tuple[int, int]], known: list[tuple[int, int]]) -> bool:
    """Every (clock, length) in ``ranges`` lies within the union of ``known``."""
    merged: list[tuple[int, int]] = []
    for start, length in sorted(known):
        end = start + length
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    for start, length in ranges:
        if length == 0:
            continue
        end = start + length
        if not any(lo <= start and end <= hi for lo, hi in merged):
            return False
    return True


def novelty(update: bytes, doc: Doc) -> Novelty:
    """What ``update`` would add to ``doc``; ValueError/MalformedMessage if it is broken."""
    state = doc.get_state()
    missing = get_update(update, state)
    if not missing or missing[0] != 0:  # v1: the number of clients with structs comes first
        return Novelty.CONTENT
    deletions = decode_delete_set(missing[1:])
    if not any(length for ranges in deletions.values() for _, length in ranges):
        return Novelty.NOTHING
    known = decode_delete_set(doc.get_update(state)[1:])
    for client, ranges in deletions.items():
        if not _covered(ranges, known.get(client, [])):
            return Novelty.DELETIONS
    return Novelty.NOTHING
