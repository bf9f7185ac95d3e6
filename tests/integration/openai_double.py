"""A local OpenAI-compatible chat-completions server for tests (ASGI under uvicorn).

It speaks the real wire format on ``POST /v1/chat/completions`` and answers from a
script: each request takes the next :class:`Reply` (the last one repeats). With an
``answer`` function, the script is played first and then ``answer(sentences)``
replies to every request from the sentences it carries. Every request body is
recorded in ``requests``, and every sentence sent in ``sentences``.

:func:`serve` runs it in the caller's event loop; :func:`serve_process` in a child
process of its own (``python openai_double.py SCRIPT.json``), as a real model server
is: for measurements, where the caller's own work must not delay the answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
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


def answer_from(known: dict[str, tuple[float, float]]) -> Callable[[list[str]], Reply]:
    """An ``answer`` that finds the ``known`` names in the sentences, like a model would."""

    def answer(sentences: list[str]) -> Reply:
        found = [
            {"sentence_index": index, "text": name, "name": name, "lat": lat, "lng": lng}
            for index, sentence in enumerate(sentences)
            for name, (lat, lng) in known.items()
            if name in sentence
        ]
        return places(*found)

    return answer


class OpenAIDouble:
    def __init__(
        self, script: list[Reply], *, answer: Callable[[list[str]], Reply] | None = None
    ) -> None:
        self.script = list(script)
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.sentences: list[str] = []
        self.base_url = ""

    def counts(self) -> dict[str, int]:
        """Requests and sentences so far, and the largest request (sentences, characters)."""
        sizes = [self.sentences_of(r) for r in self.requests]
        return {
            "requests": len(self.requests),
            "sentences": len(self.sentences),
            "max_sentences": max((len(s) for s in sizes), default=0),
            "max_chars": max((sum(len(t) for t in s) for s in sizes), default=0),
        }

    @staticmethod
    def sentences_of(request: dict[str, Any]) -> list[str]:
        """The sentence texts one request carried."""
        content = json.loads(request["messages"][-1]["content"])
        return [item["text"] for item in content["sentences"]]

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
        if scope["method"] == "GET" and scope["path"] == "/v1/counts":
            await self._send(send, 200, self.counts(), {})
            return
        if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
            await self._send(send, 404, {"error": {"message": "not found"}}, {})
            return
        request = json.loads(body)
        self.requests.append(request)
        sentences = self.sentences_of(request)
        self.sentences.extend(sentences)
        if self.answer is not None:
            reply = self.script.pop(0) if self.script else self.answer(sentences)
        else:
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


@contextmanager
def serve_process(
    script: list[Reply],
    *,
    known: dict[str, tuple[float, float]] | None = None,
    delay_s: float = 0.0,
) -> Iterator[str]:
    """The double in a child process; yields its base URL (``GET {url}/counts``
    answers its :meth:`OpenAIDouble.counts`). With ``known``, it answers after the
    script with :func:`answer_from` ``(known)``, each answer ``delay_s`` late."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(
            {
                "script": [asdict(reply) for reply in script],
                "known": known,
                "delay_s": delay_s,
            },
            f,
        )
    process = subprocess.Popen(
        [sys.executable, __file__, f.name],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().decode().strip()
        if not base_url.startswith("http://"):
            raise RuntimeError(f"the OpenAI double did not start (exit {process.poll()})")
        yield base_url
    finally:
        process.terminate()
        process.wait(10)
        os.unlink(f.name)


async def _serve_until_stopped(spec: dict[str, Any]) -> None:
    script = [Reply(**r) for r in spec["script"]]
    answer = None
    if spec.get("known"):
        known = {name: (lat, lng) for name, (lat, lng) in spec["known"].items()}
        find = answer_from(known)

        def answer(sentences: list[str]) -> Reply:
            reply = find(sentences)
            reply.delay_s = spec.get("delay_s", 0.0)
            return reply

    async with serve(OpenAIDouble(script, answer=answer)) as double:
        print(double.base_url, flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    with open(sys.argv[1]) as script_file:
        anyio.run(_serve_until_stopped, json.load(script_file))
