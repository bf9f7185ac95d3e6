"""PostgresActivityWriter against real sockets, and the service run in-process."""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import anyio
import pytest
from docserver_support import YClient, activity_rows, free_port, wait_for_rows
from structlog.testing import capture_logs

from docserver.activity.postgres import PostgresActivityWriter
from docserver.errors import ListenFailed
from docserver.service import run
from docserver.settings import DocserverSettings

pytestmark = pytest.mark.anyio


async def test_buffer_is_bounded_and_drops_join_rows_first_loudly() -> None:
    # nothing listens on this port: every attempt fails at once
    writer = PostgresActivityWriter(
        f"postgresql://x@127.0.0.1:{free_port()}/x", max_buffer=10, retry_max_s=0.2
    )
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(functools.partial(writer.run, on_active_documents=lambda ids: None))
            writer.record("d", "active", 1)
            for n in range(8):
                writer.record("d", "user_joined", n + 1)
            writer.record("d", "idle", 0)
            assert writer.pending == 10
            writer.record("e", "active", 1)  # full: the oldest join row makes room
            assert writer.pending == 10
            with anyio.fail_after(5):
                while not any(e["event"] == "activity_database_unreachable" for e in logs):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            for _ in range(8):
                writer.record("f", "active", 1)  # joins run out, then the oldest rows go
            tg.cancel_scope.cancel()
    events = [e["event"] for e in logs]
    assert events.count("activity_database_unreachable") == 1  # once, not per retry
    assert events.count("activity_buffer_full_dropped_join_row") == 8
    dropped = [e for e in logs if e["event"] == "activity_buffer_full_dropped_row"]
    assert [d["dropped"]["event_type"] for d in dropped] == ["active"]
    assert all(e["log_level"] in ("warning", "error") for e in logs if "dropped" in e["event"])
    assert writer.pending == 10


async def test_in_process_service_serves_and_stops_on_cancel(
    tmp_path: Path, database_url: str
) -> None:
    settings = DocserverSettings(
        ws_port=0, docagents_home=tmp_path, idle_timeout_ms=100, _env_file=None
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            functools.partial(run, settings, database_url=database_url, handle_signals=False)
        )
        async with YClient(f"ws://127.0.0.1:{port}/in-process").connected():
            await wait_for_rows(database_url, "in-process", [("active", 1)])
        await wait_for_rows(database_url, "in-process", [("active", 1), ("idle", 0)])
        tg.cancel_scope.cancel()
    assert activity_rows(database_url, "in-process")[-1] == ("in-process", "idle", 0)


async def test_a_taken_port_stops_the_service_with_listen_failed(
    tmp_path: Path, database_url: str
) -> None:
    """The failure comes out as itself, not inside the task groups' exception groups."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = DocserverSettings(
            ws_port=taken.getsockname()[1], docagents_home=tmp_path, _env_file=None
        )
        with anyio.fail_after(20), pytest.raises(ListenFailed, match="cannot listen"):
            await run(settings, database_url=database_url, handle_signals=False)
