"""A full disk under the document store: nothing is relayed that is not stored, /healthz
says so, writing resumes by itself, and every relayed edit survives a kill -9.

The store lives on a small tmpfs: mounted directly when this process may mount
(root), else inside a user + mount namespace (``unshare -Urm``, entered by the
docserver with ``nsenter``), filled and emptied from here through ``/proc/<pid>/root``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from docserver_support import DocserverProcess, YClient
from pycrdt import Text

pytestmark = pytest.mark.anyio


@contextlib.contextmanager
def small_tmpfs(path: Path) -> Iterator[bool]:
    """Mount a 4 MB tmpfs at ``path``; yields False when this process may not mount."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], check=False
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


class NamespacedDocserver(DocserverProcess):
    """The docserver inside a user + mount namespace that holds a tmpfs at ``store_dir``.

    A holder process keeps the namespace (and the tmpfs) alive across docserver restarts.
    """

    def __init__(self, *args: object, store_dir: Path, **kwargs: str) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.store_dir = store_dir
        self.holder: subprocess.Popen[bytes] | None = None

    def _hold(self) -> int:
        if self.holder is None:
            assert shutil.which("unshare") and shutil.which("nsenter"), "util-linux is needed"
            script = 'mount -t tmpfs -o size=4m tmpfs "$0" && touch "$0/.ready" && exec sleep 3600'
            self.holder = subprocess.Popen(
                ["unshare", "-Urm", "sh", "-c", script, str(self.store_dir)]
            )
        return self.holder.pid

    async def start(self) -> None:
        pid = self._hold()
        with anyio.fail_after(10):
            while not (self.visible_store_dir() / ".ready").exists():  # noqa: ASYNC110
                await anyio.sleep(0.05)
        command = [
            "nsenter", "-t", str(pid), "-U", "-m", "--preserve-credentials",
            sys.executable, "-m", "manager.cli", "docserver",
        ]  # fmt: skip
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220
                command, cwd=self.home, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        await self._wait_healthy()

    def release(self) -> None:
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()

    async def _wait_healthy(self) -> None:
        with anyio.fail_after(30):
            async with httpx.AsyncClient() as client:
                while True:
                    assert self.process is not None
                    if self.process.poll() is not None:
                        raise RuntimeError(f"docserver exited:\n{self.log()}")
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get(self.http + "/healthz", timeout=1)).status_code == 200:
                            return
                    await anyio.sleep(0.05)

    def visible_store_dir(self) -> Path:
        assert self.holder is not None
        return Path(f"/proc/{self.holder.pid}/root") / self.store_dir.relative_to("/")


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


async def health(server: DocserverProcess) -> tuple[int, dict[str, object]]:
    async with httpx.AsyncClient() as client:
        response = await client.get(server.http + "/healthz")
        return response.status_code, response.json()


async def wait_health(server: DocserverProcess, status: int) -> dict[str, object]:
    with anyio.fail_after(30):
        while True:
            code, body = await health(server)
            if code == status:
                return body
            await anyio.sleep(0.05)


async def test_disk_full_stops_relaying_then_resumes_and_survives_kill(
    tmp_path: Path, database_url: str
) -> None:
    store_dir = tmp_path / "store"
    with small_tmpfs(store_dir) as mounted:
        env = {"DOCAGENTS_HOME": str(store_dir), "DOCSERVER_ROOM_UNLOAD_AFTER_S": "600"}
        if mounted:
            server: DocserverProcess = DocserverProcess(tmp_path / "run", database_url, **env)
            await server.start()
            visible = store_dir
        else:
            server = NamespacedDocserver(tmp_path / "run", database_url, store_dir=store_dir, **env)
            await server.start()
            visible = server.visible_store_dir()
        try:
            url = server.ws_url("full")
            async with (
                YClient(url, name="A").connected() as a,
                YClient(url, name="B").connected() as b,
            ):
                a.doc["t"] = text = Text()
                text += "before. "
                await b.wait_for(lambda: str(b.doc.get("t", type=Text)) == "before. ")

                filler = fill(visible)
                during = "during the outage " * 12_000  # ~200 KB: needs new pages
                text += during
                body = await wait_health(server, 503)
                assert "cannot write the document store" in str(body["reason"])
                # the edit was refused by the store, so it was never relayed
                assert str(b.doc.get("t", type=Text)) == "before. "

                filler.unlink()
                await wait_health(server, 200)
                # the room asks its clients again; A resends what the store refused
                await b.wait_for(
                    lambda: str(b.doc.get("t", type=Text)) == "before. " + during, within=30
                )
                text += "after."
                await b.wait_for(lambda: str(b.doc.get("t", type=Text)).endswith("after."))
            await server.stop(signal.SIGKILL)
            await server.start()
            async with YClient(url, name="C").connected() as c:
                await c.wait_for(
                    lambda: str(c.doc.get("t", type=Text)) == "before. " + during + "after."
                )
            log = server.log()
            assert '"document_store_write_failed"' in log
            assert '"document_store_write_recovered"' in log
            assert '"room_resync_requested"' in log
        finally:
            if server.process is not None and server.process.poll() is None:
                await server.stop()
            if isinstance(server, NamespacedDocserver):
                server.release()
