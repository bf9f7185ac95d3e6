"""The worker's exception tree, and the pipe protocol raising its name for bad bytes."""

from __future__ import annotations

import pytest

from worker import errors, protocol
from worker.errors import (
    AccessRefused,
    ConnectionLost,
    Fenced,
    LlmCallFailed,
    LlmRequestRefused,
    ProtocolError,
    SyncRejected,
    WorkerError,
)
from worker.protocol import ErrorReport, decode, encode


def test_every_exception_of_the_tree_descends_from_worker_error() -> None:
    names = [name for name in errors.__all__ if name != "WorkerError"]
    assert names and all(issubclass(getattr(errors, name), WorkerError) for name in names)
    assert issubclass(SyncRejected, ConnectionLost)
    assert issubclass(Fenced, AccessRefused)
    assert issubclass(LlmRequestRefused, LlmCallFailed)
    assert not issubclass(Fenced, ConnectionLost)  # a fenced agent is never retried


def test_a_failed_call_carries_its_reason_and_retry_after() -> None:
    failed = LlmCallFailed("HTTP 429", retry_after_s=3.0)
    assert (str(failed), failed.reason, failed.retry_after_s) == ("HTTP 429", "HTTP 429", 3.0)
    assert LlmRequestRefused("HTTP 400").retry_after_s is None


@pytest.mark.parametrize(
    "data",
    [b"not json", b'{"type": "nonsense"}', b'{"type": "pong"}', b" " * (64 * 1024 + 1)],
    ids=["garbage", "unknown", "incomplete", "oversized"],
)
def test_bad_pipe_bytes_raise_the_worker_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(data)
    assert isinstance(caught.value, WorkerError) and isinstance(caught.value, ValueError)
    assert protocol.ProtocolError is ProtocolError  # what the manager imports


def test_an_error_report_keeps_its_wire_type() -> None:
    report = ErrorReport(message="rejected a malformed pipe message")
    assert b'"type":"error"' in encode(report)
    assert decode(encode(report)) == report
