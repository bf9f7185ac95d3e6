"""``run_standalone`` (``docagents worker DOCUMENT_ID``) in a real process: marks, then Ctrl+C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import anyio
import pytest
from ywebsocket_server import HumanClient, YServer

pytestmark = pytest.mark.anyio

SCRIPT = """
import anyio
from worker.config import WorkerSettings
from worker.main import run_standalone

anyio.run(run_standalone, WorkerSettings(), "solo-doc", backend="asyncio")
"""


async def test_standalone_worker_marks_and_stops_cleanly_on_sigint() -> None:
    async with YServer().running() as server:
        env = {
            **os.environ,
            "DOC_WS_URL": server.url("/{document_id}"),
            "EXTRACTOR": "gazetteer",
            "SENTENCE_DEBOUNCE_MS": "50",
            "LOG_FORMAT": "json",
        }
        env.pop("OPENAI_API_KEY", None)
        process = await anyio.open_process(
            [sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.DEVNULL
        )
        try:
            async with HumanClient(server.url("/solo-doc")).connected() as ann:
                ann.add_paragraph("Greetings from Lisbon.")
                await ann.wait_for(lambda: ann.marked_texts() == ["Lisbon"], within=20)
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(10):
                assert await process.wait() == 0
            assert process.stderr is not None
            logs = b"".join([chunk async for chunk in process.stderr]).decode()
            assert "place_marked" in logs
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()
