"""Which document a websocket path names, or why it is refused (pure).

Two forms serve the same room: ``/parties/{PARTY_NAME}/{document_id}`` and
``/{document_id}``. The id is one percent-encoded path segment: the path is split
on raw ``/`` *before* decoding, so ``%2F`` cannot smuggle a separator in, and the
decoded id is then checked. Refused ids never reach the database or the disk.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

__all__ = ["MAX_DOCUMENT_ID_LENGTH", "Refusal", "document_id_problem", "parse_document_path"]

#: Matches the CHECK on document_activity.document_id (characters, not bytes).
MAX_DOCUMENT_ID_LENGTH = 512

#: Close codes: 4400 (bad request) and 4404 (unknown path) are in the range that
#: y-websocket clients (and our editor) treat as permanent: no reconnect loop.
INVALID_DOCUMENT_CLOSE_CODE = 4400
UNKNOWN_PATH_CLOSE_CODE = 4404


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    reason: str


def document_id_problem(document_id: str) -> str | None:
    """Why ``document_id`` is not acceptable, or None when it is."""
    if not document_id:
        return "document id is empty"
    if len(document_id) > MAX_DOCUMENT_ID_LENGTH:
        return f"document id is longer than {MAX_DOCUMENT_ID_LENGTH} characters"
    if "/" in document_id:
        return "document id contains '/'"
    if ".." in document_id:
        return "document id contains '..'"
    if any(unicodedata.category(ch) == "Cc" for ch in document_id):
        return "document id contains control characters"
    return None


def _decode_segment(raw: bytes) -> str | None:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def parse_document_path(raw_path: bytes, *, party_name: str) -> str | Refusal:
    """The document id named by a websocket request path, or a :class:`Refusal`."""
    if not raw_path.startswith(b"/"):
        return Refusal(UNKNOWN_PATH_CLOSE_CODE, "unknown path")
    segments = raw_path[1:].split(b"/")
    if len(segments) >= 2 and segments[0] == b"parties":
        if _decode_segment(segments[1]) != party_name:
            return Refusal(UNKNOWN_PATH_CLOSE_CODE, "unknown party")
        id_segments = segments[2:]
    else:
        id_segments = segments
    if not id_segments:
        return Refusal(INVALID_DOCUMENT_CLOSE_CODE, "invalid document id: is empty")
    if len(id_segments) != 1:
        return Refusal(INVALID_DOCUMENT_CLOSE_CODE, "invalid document id: contains '/'")
    document_id = _decode_segment(id_segments[0])
    if document_id is None:
        return Refusal(INVALID_DOCUMENT_CLOSE_CODE, "invalid document id: not UTF-8")
    problem = document_id_problem(document_id)
    if problem is not None:
        detail = problem.removeprefix("document id ")
        return Refusal(INVALID_DOCUMENT_CLOSE_CODE, f"invalid document id: {detail}")
    return document_id
