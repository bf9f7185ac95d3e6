"""A plain Node ``y-websocket`` client in a child process (tests/js/docserver/plain_client.mjs).

Its awareness state stays ``{}``, as an app wired like the README's snippet
(Collaboration without a caret) leaves it. The test drives it with commands on
stdin and reads its JSON event lines: ``synced``, ``agent`` (the agent's presence
as this client sees it, with a timestamp), ``marks``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "docserver" / "plain_client.mjs"


def require_node() -> None:
    if shutil.which("node") is None:
        pytest.fail("node is required (scripts/setup --test installs it)")
    if not (JS_DIR / "node_modules" / "y-websocket").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=600
        )


class PlainClient:
    def __init__(self, process: anyio.abc.Process) -> None:
        self._process = process
        self.events: list[dict[str, Any]] = []
        self._changed = anyio.Event()

    async def read(self) -> None:
        assert self._process.stdout is not None
        buffer = b""
        async for chunk in self._process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    self.events.append(json.loads(line))
            self._changed.set()
            self._changed = anyio.Event()

    async def send(self, command: str) -> None:
        assert self._process.stdin is not None
        await self._process.stdin.send(command.encode() + b"\n")

    async def type(self, sentence: str) -> None:
        await self.send(f"type {sentence}")

    async def wait_for(self, predicate: Callable[[PlainClient], Any], within: float = 20.0) -> Any:
        with anyio.fail_after(within):
            while not (value := predicate(self)):
                await self._changed.wait()
        return value

    # --- what it saw ---------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return any(e["event"] == "synced" for e in self.events)

    @property
    def agent_present(self) -> bool:
        changes = [e for e in self.events if e["event"] == "agent"]
        return bool(changes) and changes[-1]["present"]

    def agent_changes(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "agent"]

    @property
    def marks(self) -> list[list[str]]:
        found = [e["marks"] for e in self.events if e["event"] == "marks"]
        return found[-1] if found else []


@asynccontextmanager
async def plain_client(server_base: str, room: str) -> AsyncIterator[PlainClient]:
    """A plain client connected to ``server_base`` (``ws://host:port/parties/document``)."""
    require_node()
    process = await anyio.open_process(
        ["node", str(SCRIPT), server_base, room], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    client = PlainClient(process)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.read)
            await client.wait_for(lambda c: c.synced)
            yield client
            await client.send("quit")
            with anyio.move_on_after(5):
                await process.wait()
            tg.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()
