"""Interop with the real JS libraries: y-websocket + y-prosemirror write, the worker marks.

A Node client (tests/js/interop.mjs) writes paragraphs through
``prosemirrorToYXmlFragment``; the worker, a real child process, marks the places;
the Node client reads the fragment back with ``yXmlFragmentToProseMirrorRootNode``
and reports the ``geoMark`` marks a ProseMirror editor would show.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest
from ywebsocket_server import YServer

from worker.config import WorkerSettings
from worker.main import process_main
from worker.protocol import Connected, Shutdown, decode, encode

JS_DIR = Path(__file__).resolve().parent.parent / "js"

pytestmark = [pytest.mark.js, pytest.mark.anyio]


@pytest.fixture(scope="session")
def node() -> str:
    executable = shutil.which("node")
    if executable is None:
        pytest.skip("node is not installed")
    if not (JS_DIR / "node_modules" / "y-prosemirror").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=600
        )
    return executable


async def test_worker_marks_what_y_prosemirror_wrote(node: str) -> None:
    async with YServer().running() as server:
        settings = WorkerSettings(  # type: ignore[call-arg]
            _env_file=None,
            doc_ws_url=server.url("/{document_id}"),
            extractor="gazetteer",
            sentence_debounce_ms=50,
            log_level="WARNING",
        )
        ctx = multiprocessing.get_context("forkserver")
        parent_end, child_end = ctx.Pipe()
        worker = ctx.Process(target=process_main, args=(settings, "interop-doc", "a-1", child_end))
        worker.start()
        child_end.close()
        try:
            with anyio.fail_after(20):
                while not isinstance(decode(await _recv(parent_end)), Connected):
                    pass
            result = await anyio.run_process(
                [node, "interop.mjs", server.url(), "interop-doc", "prosemirror", "6", "20000"],
                cwd=JS_DIR,
                check=False,
            )
            assert result.returncode == 0, result.stderr.decode()
            seen = json.loads(result.stdout.decode().strip().splitlines()[-1])
            parent_end.send_bytes(encode(Shutdown()))
        finally:
            parent_end.close()
            await anyio.to_thread.run_sync(worker.join, 5)
            if worker.exitcode is None:
                worker.kill()
    assert worker.exitcode == 0

    # The text is untouched, the marks sit on exactly the place names.
    assert seen["paragraphs"] == [
        "København 🇩🇰 via Zürich to Paris.",
        "We left Rome.\nThen we reached Oslo. Unfinished Berlin",
        "Bold Vienna is lovely!",
    ]
    marks = seen["marks"]
    assert [m["text"] for m in marks] == ["København", "Zürich", "Paris", "Rome", "Oslo", "Vienna"]
    assert marks[-1]["others"] == ["strong"]  # existing formatting is kept
    for mark in marks:
        attrs = mark["attrs"]
        assert mark["types"] == {
            "geoId": "string",
            "placeName": "string",
            "lat": "string",
            "lng": "string",
            "colorIndex": "number",
            "coordSource": "string",
        }
        assert -90 <= float(attrs["lat"]) <= 90 and -180 <= float(attrs["lng"]) <= 180
        assert attrs["colorIndex"] == int(attrs["colorIndex"])
    assert len({m["attrs"]["geoId"] for m in marks}) == len(marks)
    assert sorted(m["attrs"]["colorIndex"] for m in marks) == list(range(len(marks)))
    paris = next(m["attrs"] for m in marks if m["text"] == "Paris")
    assert abs(float(paris["lat"]) - 48.85) < 0.1 and abs(float(paris["lng"]) - 2.35) < 0.1


async def _recv(conn: multiprocessing.connection.Connection) -> bytes:
    await anyio.wait_readable(conn.fileno())
    return conn.recv_bytes()
