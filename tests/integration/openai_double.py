"""A local OpenAI-compatible chat-completions server for tests (ASGI under uvicorn).

It speaks the real wire format on ``POST /v1/chat/completions`` and answers from a
script: each request takes the next :class:`Reply` (the last one repeats). Every
request body is recorded in ``requests``.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn


@dataclass
class Reply:
    content: str | None = None  # the assistant message content (a JSON string)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def places(*items: dict[str, Any]) -> Reply:
    return Reply(content=json.dumps({"places": list(items)}))


class OpenAIDouble:
    def __init__(self, script: list[Reply]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.base_url = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
            await self._send(send, 404, {"error": {"message": "not found"}}, {})
            return
        request = json.loads(body)
        self.requests.append(request)
        reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if reply.delay_s:
            await anyio.sleep(reply.delay_s)
        if reply.status != 200:
            error = {"error": {"message": "scripted failure", "type": "server_error", "code": None}}
            await self._send(send, reply.status, error, reply.headers)
            return
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }
        await self._send(send, 200, payload, reply.headers)

    @staticmethod
    async def _send(send: Any, status: int, payload: Any, headers: dict[str, str]) -> None:
        body = json.dumps(payload).encode()
        raw_headers = [(b"content-type", b"application/json")]
        raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serve(double: OpenAIDouble) -> AsyncIterator[OpenAIDouble]:
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; with
    # proto 0 every response written in two parts waits out a delayed ACK (40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(double, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    double.base_url = f"http://127.0.0.1:{port}/v1"
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110  (uvicorn exposes only a flag)
                await anyio.sleep(0.01)
        try:
            yield double
        finally:
            server.should_exit = True
    sock.close()
