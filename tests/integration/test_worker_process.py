"""The worker as a real child process, talking over a multiprocessing Pipe."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from multiprocessing.connection import Connection

import anyio
import psutil
import pytest
from ywebsocket_server import HumanClient, YServer

from worker.config import WorkerSettings
from worker.main import process_main
from worker.protocol import (
    Connected,
    LocationMarked,
    Message,
    Metrics,
    Ping,
    Pong,
    Shutdown,
    decode,
    encode,
)

pytestmark = pytest.mark.anyio

CTX = multiprocessing.get_context("forkserver")


def settings_for(url_template: str) -> WorkerSettings:
    return WorkerSettings(  # type: ignore[call-arg]
        _env_file=None,
        doc_ws_url=url_template,
        extractor="gazetteer",
        metrics_interval_s=0.3,
        sentence_debounce_ms=50,
        log_level="WARNING",
    )


@pytest.fixture
async def server() -> AsyncIterator[YServer]:
    async with YServer().running() as running:
        yield running


@asynccontextmanager
async def child(
    settings: WorkerSettings,
) -> AsyncIterator[tuple[multiprocessing.Process, Connection]]:
    parent_end, child_end = CTX.Pipe()
    process = CTX.Process(
        target=process_main, args=(settings, "doc-1", "agent-1", child_end), daemon=True
    )
    process.start()
    child_end.close()
    try:
        yield process, parent_end
    finally:
        parent_end.close()
        await anyio.to_thread.run_sync(process.join, 5)
        if process.exitcode is None:
            process.kill()
            process.join()


async def receive(conn: Connection, kind: type[Message], within: float = 15) -> Message:
    """The next message of type ``kind`` (others are skipped)."""
    with anyio.fail_after(within):
        while True:
            await anyio.wait_readable(conn.fileno())
            message = decode(conn.recv_bytes())
            if isinstance(message, kind):
                return message


async def test_ping_metrics_marks_and_shutdown(server: YServer) -> None:
    settings = settings_for(server.url("/{document_id}"))
    async with (
        child(settings) as (process, conn),
        HumanClient(server.url("/doc-1")).connected() as ann,
    ):
        connected = await receive(conn, Connected)
        assert isinstance(connected, Connected)
        assert connected.pid == process.pid and connected.agent_id == "agent-1"

        conn.send_bytes(encode(Ping(seq=41)))
        pong = await receive(conn, Pong)
        assert isinstance(pong, Pong) and pong.seq == 41

        ann.add_paragraph("We drove from Zürich to Paris.")
        marked = await receive(conn, LocationMarked)
        assert isinstance(marked, LocationMarked)
        await ann.wait_for(lambda: sorted(ann.marked_texts()) == ["Paris", "Zürich"])

        await receive(conn, Metrics)  # the first one covers start-up; compare the next
        metrics = await receive(conn, Metrics)
        assert isinstance(metrics, Metrics)
        rss_mb = psutil.Process(process.pid).memory_info().rss / (1024 * 1024)
        assert abs(metrics.memory_mb - rss_mb) <= 0.1 * rss_mb
        assert 0 <= metrics.cpu_percent <= 100 * (os.cpu_count() or 1)
        assert metrics.websocket_latency_ms is not None and metrics.websocket_latency_ms >= 0

        conn.send_bytes(encode(Shutdown(reason="test")))
        await anyio.to_thread.run_sync(process.join, 5)
        assert process.exitcode == 0


async def test_garbage_on_the_pipe_is_rejected_not_fatal(server: YServer) -> None:
    settings = settings_for(server.url("/{document_id}"))
    async with child(settings) as (process, conn):
        conn.send_bytes(b"\x80not json")
        conn.send_bytes(encode(Ping(seq=7)))
        pong = await receive(conn, Pong)
        assert isinstance(pong, Pong) and pong.seq == 7
        assert process.is_alive()
        conn.send_bytes(encode(Shutdown()))


async def test_pipe_closed_means_manager_gone_and_child_exits(server: YServer) -> None:
    settings = settings_for(server.url("/{document_id}"))
    async with child(settings) as (process, conn):
        await receive(conn, Connected)
        conn.close()
        await anyio.to_thread.run_sync(process.join, 2.0)
        assert process.exitcode is not None


def wait_gone(pid: int, within: float) -> bool:
    """Whether ``pid`` exits (or is a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


PARENT_SCRIPT = """
import multiprocessing, sys, time
from worker.config import WorkerSettings
from worker.main import process_main

if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    parent_end, child_end = ctx.Pipe()
    settings = WorkerSettings(_env_file=None, doc_ws_url=sys.argv[1], log_level="WARNING")
    p = ctx.Process(target=process_main, args=(settings, "doc-2", "agent-2", child_end))
    p.start()
    child_end.close()
    parent_end.recv_bytes()  # wait for "connected"
    print(p.pid, flush=True)
    time.sleep(600)
"""


@pytest.fixture
def orphan_parent() -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Starts a parent process that forks a worker, prints its pid and waits."""
    proc: subprocess.Popen[str] | None = None

    def start(url: str) -> subprocess.Popen[str]:
        nonlocal proc
        proc = subprocess.Popen(
            [sys.executable, "-c", PARENT_SCRIPT, url], stdout=subprocess.PIPE, text=True
        )
        return proc

    yield start
    if proc is not None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


async def test_parent_killed_child_exits_within_two_seconds(
    server: YServer, orphan_parent: Callable[[str], subprocess.Popen[str]]
) -> None:
    parent = orphan_parent(server.url("/{document_id}"))
    assert parent.stdout is not None
    with anyio.fail_after(20):
        line = await anyio.to_thread.run_sync(parent.stdout.readline)
    child_pid = int(line)
    assert psutil.pid_exists(child_pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert await anyio.to_thread.run_sync(wait_gone, child_pid, 2.0)
