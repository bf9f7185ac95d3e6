"""Messages between the manager and one worker, over a multiprocessing ``Pipe``.

Every message is a small typed record, serialised as one JSON object per
``Connection.send_bytes`` call (never pickle: a worker's pipe is decoded by the
manager, and garbage must be rejected, not executed). The ``type`` field names
the message and is part of the contract in DESIGN.md.

worker -> manager: ``connected``, ``metrics``, ``llm_call``, ``location_marked``,
``activity``, ``error``, ``pong``, ``extraction_report``.
manager -> worker: ``ping``, ``shutdown``, ``memory``.

Use :func:`encode` and :func:`decode`; :func:`decode` raises
:class:`~worker.errors.ProtocolError` for anything that is not exactly one valid
message. It is importable from here too: the manager imports nothing of the worker's
but this module and the settings.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from worker.errors import ProtocolError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Activity",
    "Connected",
    "ErrorReport",
    "ExtractionReport",
    "LlmCall",
    "LocationMarked",
    "ManagerMessage",
    "MemoryEntry",
    "MemoryHandover",
    "Message",
    "Metrics",
    "Ping",
    "Pong",
    "ProtocolError",
    "RememberedPlace",
    "Shutdown",
    "WorkerMessage",
    "decode",
    "encode",
]

#: Largest message either side accepts; anything bigger is a protocol error.
MAX_MESSAGE_BYTES = 64 * 1024


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- worker -> manager -------------------------------------------------------


class Connected(_Message):
    """The worker finished its first sync with the document server."""

    type: Literal["connected"] = "connected"
    document_id: str
    agent_id: str
    pid: int
    #: Milliseconds from the worker's start to the end of the first sync.
    sync_ms: float = Field(ge=0)


class Metrics(_Message):
    """Periodic resource report (every ``METRICS_INTERVAL_S``)."""

    type: Literal["metrics"] = "metrics"
    #: Resident set size of the worker process, in MiB.
    memory_mb: float = Field(ge=0)
    #: Proportional set size (shared pages divided among their users), in MiB.
    pss_mb: float | None = Field(default=None, ge=0)
    #: Unique set size (pages only this process holds), in MiB.
    uss_mb: float | None = Field(default=None, ge=0)
    #: Real CPU percent since the previous report (100 = one full core).
    cpu_percent: float = Field(ge=0)
    #: Last measured websocket round trip, if any.
    websocket_latency_ms: float | None = Field(default=None, ge=0)
    #: Mean LLM response time since the previous report, if any call was made.
    llm_response_time_ms: float | None = Field(default=None, ge=0)


class LlmCall(_Message):
    """The worker made one LLM request (successful or not)."""

    type: Literal["llm_call"] = "llm_call"
    response_time_ms: float = Field(ge=0)
    ok: bool = True


class LocationMarked(_Message):
    """The worker applied one ``geoMark`` to the document."""

    type: Literal["location_marked"] = "location_marked"
    place_name: str
    coord_source: str


class Activity(_Message):
    """Something happened in the document.

    ``kind="edit"``: a human edited the document (keeps it recent for LRU).
    ``kind="abandoned"``: no human has been present for ``ABANDON_AFTER_MS`` (a
    third-party server's fallback); the manager should detach this agent.
    ``kind="fenced"``: the docserver retired this agent because a newer agent life
    (a higher fencing token) took the document; the worker is exiting.
    """

    type: Literal["activity"] = "activity"
    kind: Literal["edit", "abandoned", "fenced"] = "edit"


class ErrorReport(_Message):
    """A problem the worker survived (``fatal=False``) or is about to exit on.

    A report of an error, not an exception: its wire ``type`` is ``error``.
    """

    type: Literal["error"] = "error"
    message: str
    fatal: bool = False


class Pong(_Message):
    """Answer to :class:`Ping`, sent from the worker's own event loop."""

    type: Literal["pong"] = "pong"
    seq: int


class RememberedPlace(_Message):
    """A place the extractor found in a sentence (found again by its text on reuse)."""

    text: str = Field(max_length=200)
    name: str = Field(max_length=300)
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    coord_source: str = Field(max_length=40)
    geonames_id: str | None = Field(default=None, max_length=40)


class MemoryEntry(_Message):
    """What one extractor version knows of one sentence (by normalised text).

    ``done``: extracted (``places`` may be empty: "no places"). ``retry``: not
    extracted yet, ``attempts`` calls failed. ``failed``: given up (the model refused
    it alone, or it failed too often); the gazetteer marks it.
    """

    key: str = Field(min_length=1, max_length=64)
    extractor: str = Field(min_length=1, max_length=200)
    status: Literal["done", "retry", "failed"]
    places: list[RememberedPlace] = Field(default_factory=list, max_length=50)
    attempts: int = Field(default=0, ge=0)
    error: str | None = Field(default=None, max_length=200)


class ExtractionReport(_Message):
    """New memory entries, the keys reused from memory, and what it cost.

    Written by the manager to ``extraction_memory`` and ``extraction_usage_hourly``.
    A report is cut to stay well under :data:`MAX_MESSAGE_BYTES`.
    """

    type: Literal["extraction_report"] = "extraction_report"
    entries: list[MemoryEntry] = Field(default_factory=list)
    #: Keys whose stored result was reused (they are still in the document).
    seen: list[str] = Field(default_factory=list)
    sentences_sent: int = Field(default=0, ge=0)
    cache_hits: int = Field(default=0, ge=0)
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    #: Sentences whose extraction failed in this report (each failed attempt).
    failures: int = Field(default=0, ge=0)
    #: Sentences given up in this report.
    given_up: int = Field(default=0, ge=0)
    #: Sentences this worker still waits to extract, and has given up, now.
    pending: int = Field(default=0, ge=0)


# --- manager -> worker -------------------------------------------------------


class Ping(_Message):
    type: Literal["ping"] = "ping"
    seq: int


class Shutdown(_Message):
    type: Literal["shutdown"] = "shutdown"
    reason: str = "detach"


class MemoryHandover(_Message):
    """Part of the document's extraction memory, sent to a new life after its start.

    The worker extracts nothing new before the part with ``last=True`` arrives (or
    its wait runs out); ``complete=False`` says the memory could not be read.
    """

    type: Literal["memory"] = "memory"
    entries: list[MemoryEntry] = Field(default_factory=list)
    last: bool = True
    complete: bool = True


WorkerMessage = (
    Connected
    | Metrics
    | LlmCall
    | LocationMarked
    | Activity
    | ErrorReport
    | Pong
    | ExtractionReport
)
ManagerMessage = Ping | Shutdown | MemoryHandover
Message = WorkerMessage | ManagerMessage

_adapter: TypeAdapter[Message] = TypeAdapter(Annotated[Message, Field(discriminator="type")])


def encode(message: Message) -> bytes:
    """Serialise one message for ``Connection.send_bytes``."""
    return message.model_dump_json().encode()


def decode(data: bytes) -> Message:
    """Parse one message received with ``Connection.recv_bytes``.

    Raises :class:`ProtocolError` on oversized, malformed or unknown messages.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return _adapter.validate_json(data)
    except ValidationError as exc:
        raise ProtocolError(f"invalid message: {exc.errors(include_url=False)[:3]}") from exc
