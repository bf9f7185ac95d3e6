"""A real JS y-websocket client and a pycrdt client in one room, across a restart."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest
from docserver_support import YClient, running_docserver
from pycrdt import Text

pytestmark = [pytest.mark.anyio, pytest.mark.js]

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "docserver" / "roundtrip.mjs"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required (scripts/setup --test installs it)")
    if not (JS_DIR / "node_modules" / "y-websocket").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=600
        )
    return JS_DIR / "node_modules"


async def run_js(server_base: str, room: str, mode: str) -> dict[str, str]:
    result = await anyio.run_process(
        ["node", str(SCRIPT), server_base, room, mode, "15000"], check=False
    )
    payload = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert result.returncode == 0, (payload, result.stderr.decode())
    return payload


async def test_js_and_pycrdt_edit_both_ways_and_survive_restart(
    tmp_path: Path, database_url: str, node_modules: Path
) -> None:
    room = "interop%20doc%C3%A9"  # "interop docé", encoded as the editor does
    async with running_docserver(tmp_path, database_url) as server:
        base = f"ws://127.0.0.1:{server.port}/parties/document"
        async with YClient(server.ws_url("interop docé"), name="Py").connected() as py:
            notes = py.doc.get("notes", type=Text)
            async with anyio.create_task_group() as tg:
                outcome: dict[str, str] = {}

                async def js() -> None:
                    outcome.update(await run_js(base, room, "edit"))

                tg.start_soon(js)
                await py.wait_for(lambda: "from js;" in str(notes), within=15)
                notes.insert(len(str(notes)), "from python;")
            assert outcome["text"] == "from js;from python;"

        await server.stop()  # SIGTERM: a normal restart
        await server.start()

        async with YClient(server.ws_url("interop docé"), name="Py2").connected() as again:
            text = again.doc.get("notes", type=Text)
            await again.wait_for(lambda: str(text) == "from js;from python;")
        assert (await run_js(base, room, "read"))["text"] == "from js;from python;"
        # the same document through the short path /{document_id}
        short = f"ws://127.0.0.1:{server.port}"
        assert (await run_js(short, room, "read"))["text"] == "from js;from python;"
