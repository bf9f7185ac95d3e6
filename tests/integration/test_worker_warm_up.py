"""A pooled worker's boot (``worker.main.warm_up``): one agent session on loopback."""

from __future__ import annotations

import socket

import pytest

import worker.main
from worker.main import warm_up

pytestmark = pytest.mark.anyio


async def test_the_boot_runs_a_whole_session_and_touches_only_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    peers: list[object] = []
    original = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        peers.append(address)
        return original(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    assert await warm_up() is True
    assert peers and all(host == "127.0.0.1" for host, _port in peers)  # type: ignore[misc]


async def test_a_boot_that_cannot_listen_gives_up_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_server(*args: object, **kwargs: object) -> object:
        raise OSError("no port for you")

    monkeypatch.setattr(worker.main, "serve", no_server)
    assert await warm_up() is False


async def test_a_boot_whose_server_never_answers_gives_up_at_its_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A listener that accepts and never speaks: the handshake stalls.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        settings_type = worker.main.WorkerSettings
        real_construct = settings_type.model_construct

        def construct(**values: object) -> object:
            values["doc_ws_url"] = f"ws://127.0.0.1:{port}/{{document_id}}"
            return real_construct(**values)

        monkeypatch.setattr(settings_type, "model_construct", construct)
        assert await warm_up(timeout_s=0.5) is False
    finally:
        listener.close()
